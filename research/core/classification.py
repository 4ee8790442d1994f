"""Single-label classification: softmax cross-entropy (with optional label smoothing), accuracy.

Batches are {"image": B x H x W x C, "label": B int}; `task(label_smoothing)` plugs into `tasks/steps.py`.
"""

import jax
import jax.numpy as jnp
import optax

from research.core import steps


def cross_entropy(logits_BxK: jax.Array, labels_B: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy with optional label smoothing."""
    num_classes = logits_BxK.shape[-1]
    targets_BxK = optax.smooth_labels(jax.nn.one_hot(labels_B, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits_BxK, targets_BxK)


def summed_metrics(logits_BxK, labels_B, mask_B) -> dict[str, jax.Array]:
    """Summed cross-entropy (without smoothing) and accuracy over the rows where mask_B, and their count."""
    mask_B = mask_B.astype(jnp.float32)
    loss_B = cross_entropy(logits_BxK, labels_B)
    correct_B = (jnp.argmax(logits_BxK, -1) == labels_B).astype(jnp.float32)
    return {"loss": jnp.sum(loss_B * mask_B), "accuracy": jnp.sum(correct_B * mask_B), "count": jnp.sum(mask_B)}


def task(label_smoothing: float = 0.0) -> steps.Task:
    return steps.Task(
        inputs=lambda batch: (batch["image"],),
        loss=lambda logits_BxK, batch: jnp.mean(cross_entropy(logits_BxK, batch["label"], label_smoothing)),
        metrics=lambda logits_BxK, batch, mask_B: summed_metrics(logits_BxK, batch["label"], mask_B))


def make_train_step(label_smoothing: float = 0.0):
    """`train_step(state, batch, rng) -> (state, metrics)` for batches {"image", "label"}."""
    return steps.make_train_step(task(label_smoothing))


eval_step = steps.make_eval_step(task())
predict_batch = steps.make_predict(task())


def predict(state, images_BxHxWxC: jax.Array) -> jax.Array:
    """Logits in eval mode (BatchNorm running statistics)."""
    return predict_batch(state, {"image": images_BxHxWxC})
