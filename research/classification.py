"""Single-label classification: softmax cross-entropy loss, metrics, train/eval/predict steps.

Metrics are sums with a `count`, so that averages over any number of batches (and over padded eval
batches, where `mask` marks the real examples) are exact: mean = sum / count.
"""

import jax
import jax.numpy as jnp
import optax

from research.train_state import TrainState


def cross_entropy(logits_BxK: jax.Array, labels_B: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy with optional label smoothing."""
    num_classes = logits_BxK.shape[-1]
    targets_BxK = optax.smooth_labels(jax.nn.one_hot(labels_B, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits_BxK, targets_BxK)


def summed_metrics(logits_BxK, labels_B, mask_B) -> dict[str, jax.Array]:
    mask_B = mask_B.astype(jnp.float32)
    loss_B = cross_entropy(logits_BxK, labels_B)
    correct_B = (jnp.argmax(logits_BxK, -1) == labels_B).astype(jnp.float32)
    return {"loss": jnp.sum(loss_B * mask_B), "accuracy": jnp.sum(correct_B * mask_B), "count": jnp.sum(mask_B)}


def make_train_step(label_smoothing: float = 0.0):
    """Returns `train_step(state, batch, rng) -> (state, metrics)` for batches {"image", "label"}."""

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        def loss_fn(params):
            logits_BxK, updates = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
                mutable=["batch_stats"], rngs={"dropout": rng})
            loss = jnp.mean(cross_entropy(logits_BxK, batch["label"], label_smoothing))
            return loss, (logits_BxK, updates["batch_stats"])

        (loss, (logits_BxK, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        metrics = summed_metrics(logits_BxK, batch["label"], jnp.ones_like(batch["label"]))
        metrics["grad_norm"] = optax.tree.norm(grads) * metrics["count"]
        return new_state, metrics

    return train_step


def predict(state: TrainState, images_BxHxWxC: jax.Array) -> jax.Array:
    """Logits in eval mode (BatchNorm running statistics)."""
    return state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, images_BxHxWxC,
                          train=False)


def eval_step(state: TrainState, batch: dict) -> dict[str, jax.Array]:
    """Summed metrics over the batch's real examples (`mask`, when the batch is padded)."""
    logits_BxK = predict(state, batch["image"])
    return summed_metrics(logits_BxK, batch["label"], batch.get("mask", jnp.ones_like(batch["label"])))
