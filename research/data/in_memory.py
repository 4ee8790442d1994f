"""Small datasets held in device memory; batches are gathered, normalised and augmented inside jit.

The batch for global step t is a pure function of (seed, t): epoch e = t // steps_per_epoch uses the
permutation drawn from fold_in(seed, e), and augmentation uses fold_in(seed, t). So a run resumed from a
checkpoint at step t sees exactly the batches an uninterrupted run would, and the checkpoint needs no
iterator state beyond the step.

On a mesh of several devices (and several processes), the dataset is replicated on every device (each
process copies it from its own host copy, with no traffic between processes) and the batch is gathered in one
program over the mesh whose output is split over the devices, so each device gathers, normalises and augments
only its own rows. The augmentation's random draws do not depend on the mesh (jax's partitionable threefry),
so a step's batch is the same, bit for bit, on 1 or N devices and 1 or N processes.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from research import sharding
from research.errors import InputError


AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]  # (rng, images_BxHxWxC) -> images_BxHxWxC


class InMemoryImages:
    """Training batches {"image": float32 BxHxWxC normalised, "label": B or BxK} from uint8 images.

    Integer labels become int32 (classes); float labels (multi-hot BxK) stay float32. `augment_fn(rng,
    images)` runs inside jit on the normalised batch, e.g. `functools.partial(augment.augment, flip=True)`."""

    def __init__(self, images_NxHxWxC: np.ndarray, labels_N: np.ndarray, batch_size: int, mesh: Mesh,
                 seed: int, mean: float, std: float, augment_fn: AugmentFn | None = None):
        sharding.check_batch_divides(batch_size, mesh)
        if len(images_NxHxWxC) < batch_size:
            raise InputError(f"batch_size={batch_size} is larger than the dataset "
                             f"({len(images_NxHxWxC)} examples)")
        self.images = sharding.host_to_global(images_NxHxWxC, sharding.replicated(mesh))
        labels_N = labels_N.astype(np.float32 if np.issubdtype(labels_N.dtype, np.floating) else np.int32)
        self.labels = sharding.host_to_global(labels_N, sharding.replicated(mesh))
        self.batch_size = batch_size
        self.steps_per_epoch = len(images_NxHxWxC) // batch_size  # drop the last partial batch
        self._order_key, self._augment_key = _stream_keys(seed, 0)
        self._seed = seed
        self._epoch, self._order = -1, None
        self._gather = jax.jit(functools.partial(_gather_normalise_augment, mean=mean, std=std,
                                                 augment_fn=augment_fn),
                               out_shardings=sharding.batch_sharded(mesh))

    def batch(self, step: int) -> dict[str, jax.Array]:
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:  # one permutation per epoch, not per step
            self._epoch, self._order = epoch, self._permutation(self._order_key, epoch)
        return self._slice_and_gather(self._order, index, self._augment_key, step)

    def batch_traceable(self, step: jax.Array, stream: jax.Array | int = 0) -> dict[str, jax.Array]:
        """Step `step`'s batch, computed with jax ops only (`step` may be traced, e.g. inside `lax.scan`).

        Stream 0 equals `batch(step)`; other streams draw other data orders and augmentations (for sweeps
        over seeds)."""
        epoch, index = jnp.divmod(step, self.steps_per_epoch)
        order_key, augment_key = _stream_keys(self._seed, stream)
        return self._slice_and_gather(self._permutation(order_key, epoch), index, augment_key, step)

    def _permutation(self, order_key, epoch):
        return jax.random.permutation(jax.random.fold_in(order_key, epoch), self.labels.shape[0])

    def _slice_and_gather(self, order, index, augment_key, step):
        indices_B = jax.lax.dynamic_slice_in_dim(order, index * self.batch_size, self.batch_size)
        return self._gather(self.images, self.labels, indices_B, jax.random.fold_in(augment_key, step))


def _stream_keys(seed: int, stream) -> tuple[jax.Array, jax.Array]:
    """Keys for the data order and the augmentation of one stream of batches."""
    key = jax.random.fold_in(jax.random.key(seed), stream)
    return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def _gather_normalise_augment(images, labels, indices_B, rng, *, mean, std, augment_fn):
    images_BxHxWxC = normalise(images[indices_B], mean, std)
    if augment_fn is not None:
        images_BxHxWxC = augment_fn(rng, images_BxHxWxC)
    return {"image": images_BxHxWxC, "label": labels[indices_B]}


def normalise(images_uint8, mean: float, std: float) -> jax.Array:
    return (images_uint8.astype(jnp.float32) / 255.0 - mean) / std


def padded_batches(images_NxHxWxC: np.ndarray, labels_N: np.ndarray, batch_size: int):
    """Yields eval batches of exactly `batch_size`, the last one padded, with `mask` marking real rows."""
    for start in range(0, len(labels_N), batch_size):
        images, labels = images_NxHxWxC[start:start + batch_size], labels_N[start:start + batch_size]
        pad = batch_size - len(labels)
        mask = np.concatenate([np.ones(len(labels), bool), np.zeros(pad, bool)])
        yield {"image": np.pad(images, [(0, pad)] + [(0, 0)] * (images.ndim - 1)),
               "label": np.pad(labels, [(0, pad)] + [(0, 0)] * (labels.ndim - 1)), "mask": mask}
