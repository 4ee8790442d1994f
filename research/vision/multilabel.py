"""Multi-label classification: a sigmoid per class, binary cross-entropy, F-beta with a threshold search.

Labels are multi-hot float arrays B x K. Step metrics are sums with a `count` (see `classification.py`), so
means over padded batches are exact. F-beta is computed per example and averaged, as in the Kaggle planet
competition (F2: recall weighs four times as much as precision); the decision threshold is searched on
validation data (`search_threshold`, `search_class_thresholds`) and then applied to held-out data.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.core import classification, steps
from research.core.errors import InputError

DEFAULT_THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.01), 2)

predict = classification.predict  # logits in eval mode; probabilities are their sigmoid


def binary_cross_entropy(logits_BxK: jax.Array, targets_BxK: jax.Array) -> jax.Array:
    """Per-example binary cross-entropy, averaged over the K classes."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits_BxK, targets_BxK), axis=-1)


def fbeta_per_example(predicted_BxK, targets_BxK, beta: float = 2.0):
    """F-beta of each example's predicted label set against its true set (0/1 arrays, numpy or jax):
    (1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp). An example with no true and no predicted labels scores 1."""
    xp = jnp if isinstance(predicted_BxK, jax.Array) or isinstance(targets_BxK, jax.Array) else np
    predicted_BxK, targets_BxK = predicted_BxK.astype(xp.float32), targets_BxK.astype(xp.float32)
    tp_B = xp.sum(predicted_BxK * targets_BxK, -1)
    fp_B = xp.sum(predicted_BxK * (1 - targets_BxK), -1)
    fn_B = xp.sum((1 - predicted_BxK) * targets_BxK, -1)
    b2 = beta ** 2
    denominator_B = (1 + b2) * tp_B + b2 * fn_B + fp_B
    return xp.where(denominator_B > 0, (1 + b2) * tp_B / xp.maximum(denominator_B, 1e-12), 1.0)


def mean_fbeta(probabilities_NxK: np.ndarray, targets_NxK: np.ndarray, thresholds, beta: float = 2.0) -> float:
    """Mean per-example F-beta when class k is predicted where its probability > thresholds (scalar or K)."""
    _check_shapes(probabilities_NxK, targets_NxK)
    predicted_NxK = np.asarray(probabilities_NxK) > np.asarray(thresholds)
    return float(np.mean(fbeta_per_example(predicted_NxK, np.asarray(targets_NxK), beta)))


def search_threshold(probabilities_NxK: np.ndarray, targets_NxK: np.ndarray, beta: float = 2.0,
                     candidates=DEFAULT_THRESHOLDS) -> tuple[float, float]:
    """(threshold, mean F-beta): the candidate shared by all classes with the best mean F-beta (the smallest
    such candidate on ties)."""
    scores = [mean_fbeta(probabilities_NxK, targets_NxK, t, beta) for t in candidates]
    best = int(np.argmax(scores))
    return float(candidates[best]), scores[best]


def search_class_thresholds(probabilities_NxK: np.ndarray, targets_NxK: np.ndarray, beta: float = 2.0,
                            candidates=DEFAULT_THRESHOLDS, rounds: int = 2) -> tuple[np.ndarray, float]:
    """(thresholds_K, mean F-beta): starts from the best shared threshold, then, class by class for `rounds`
    passes, moves one class's threshold to its best candidate with the others fixed (coordinate ascent; the
    score never falls, since a class keeps its threshold unless a candidate scores strictly better)."""
    shared, best_score = search_threshold(probabilities_NxK, targets_NxK, beta, candidates)
    thresholds_K = np.full(probabilities_NxK.shape[1], shared)
    for _ in range(rounds):
        for k in range(len(thresholds_K)):
            for t in candidates:
                trial_K = thresholds_K.copy()
                trial_K[k] = t
                score = mean_fbeta(probabilities_NxK, targets_NxK, trial_K, beta)
                if score > best_score:
                    thresholds_K, best_score = trial_K, score
    return thresholds_K, best_score


def summed_metrics(logits_BxK, targets_BxK, mask_B, threshold: float = 0.5) -> dict[str, jax.Array]:
    """Summed loss, F2, F1 and exact-match accuracy at `threshold`, over the examples where mask_B."""
    mask_B = mask_B.astype(jnp.float32)
    predicted_BxK = jax.nn.sigmoid(logits_BxK) > threshold
    exact_B = jnp.all(predicted_BxK == (targets_BxK > 0.5), -1).astype(jnp.float32)
    summed = lambda v_B: jnp.sum(v_B * mask_B)
    return {"loss": summed(binary_cross_entropy(logits_BxK, targets_BxK)),
            "f2": summed(fbeta_per_example(predicted_BxK, targets_BxK, 2.0)),
            "f1": summed(fbeta_per_example(predicted_BxK, targets_BxK, 1.0)),
            "exact_match": summed(exact_B), "count": jnp.sum(mask_B)}


def task() -> steps.Task:
    """Mean binary cross-entropy; summed metrics at threshold 0.5."""
    return steps.Task(
        inputs=lambda batch: (batch["image"],),
        loss=lambda logits_BxK, batch: jnp.mean(binary_cross_entropy(logits_BxK, batch["label"])),
        metrics=lambda logits_BxK, batch, mask_B: summed_metrics(logits_BxK, batch["label"], mask_B))


def make_train_step():
    """`train_step(state, batch, rng) -> (state, metrics)` for batches {"image", "label": B x K multi-hot}."""
    return steps.make_train_step(task())


eval_step = steps.make_eval_step(task())


def _check_shapes(probabilities_NxK, targets_NxK) -> None:
    if np.shape(probabilities_NxK) != np.shape(targets_NxK) or np.ndim(probabilities_NxK) != 2:
        raise InputError(f"probabilities {np.shape(probabilities_NxK)} and multi-hot targets "
                         f"{np.shape(targets_NxK)} must both be N x K")
