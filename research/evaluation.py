"""Evaluation over a whole array dataset: padded batches with a mask, so every example counts once."""

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from research import augment, sharding
from research.data.in_memory import normalise, padded_batches
from research.trainer import means


def make_evaluator(eval_step: Callable, images_NxHxWxC: np.ndarray, labels_N: np.ndarray, batch_size: int,
                   mesh: Mesh, mean: float, std: float, prefix: str = "test_") -> Callable[[object], dict]:
    """Returns `evaluate(state) -> {prefix + name: mean}` over the whole dataset, compiled once."""
    sharding.check_batch_divides(batch_size, mesh, "eval_batch_size")
    step = _jit_on_mesh(lambda state, batch: eval_step(state, {**batch, "image": normalise(batch["image"], mean, std)}),
                        mesh)

    def evaluate(state) -> dict[str, float]:
        total = None
        for batch in padded_batches(images_NxHxWxC, labels_N, batch_size):
            metrics = step(state, batch)
            total = metrics if total is None else jax.tree.map(lambda a, b: a + b, total, metrics)
        return {prefix + k: v for k, v in means(jax.device_get(total)).items()}

    return evaluate


def predict_probabilities(predict: Callable, state, images_NxHxWxC: np.ndarray, batch_size: int, mesh: Mesh,
                          mean: float, std: float, views: Callable | None = None, beta: float | None = None,
                          activation: Callable = jax.nn.softmax) -> np.ndarray:
    """Probabilities (N x K): `activation` of the logits (softmax, or sigmoid for multi-label).

    With `views(images) -> [view, ...]` (e.g. `functools.partial(augment.tta_views, flip=True)`), test-time
    augmentation: beta * p(plain) + (1 - beta) * mean over the views; beta None weighs the plain image as one
    more view (`augment.average_views`)."""

    def probabilities(state, batch):
        images = normalise(batch["image"], mean, std)
        probabilities_fn = lambda x: activation(predict(state, x))
        return augment.average_views(probabilities_fn, images, views(images) if views else [], beta)

    step = _jit_on_mesh(probabilities, mesh)
    labels = np.zeros(len(images_NxHxWxC), np.int32)
    out = [np.asarray(step(state, batch))[batch["mask"]]
           for batch in padded_batches(images_NxHxWxC, labels, batch_size)]
    return np.concatenate(out)


def _jit_on_mesh(fn: Callable, mesh: Mesh) -> Callable:
    """`fn(state, batch)` jitted for `mesh`, called with a host (numpy) batch that every process holds.

    The batch becomes a global array split over all devices (each process copies only its own devices' rows),
    the state keeps its shardings (replicated or split over fsdp), and the outputs are replicated, so every
    process can read them, with one or several processes."""
    jitted = jax.jit(fn, out_shardings=sharding.replicated(mesh))
    batch_sharding = sharding.batch_sharded(mesh)

    def step(state, batch):
        return jitted(state, jax.tree.map(lambda x: sharding.host_to_global(x, batch_sharding), batch))

    return step
