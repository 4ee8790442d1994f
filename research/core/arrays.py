"""Datasets held in device memory as a dict of named arrays (images and labels, masks, table columns,
user/item/rating, token windows); batches are gathered and transformed (normalised, augmented) inside jit.

The batch for global step t is a pure function of (seed, t): epoch e = t // steps_per_epoch uses the
permutation drawn from fold_in(seed, e), and the transform's randomness uses fold_in(seed, t). So a run resumed
from a checkpoint at step t sees exactly the batches an uninterrupted run would, and the checkpoint needs no
iterator state beyond the step.

On a mesh of several devices (and several processes), the dataset is replicated on every device (each
process copies it from its own host copy, with no traffic between processes) and the batch is gathered in one
program over the mesh whose output is split over the devices, so each device gathers and transforms only its
own rows. The random draws do not depend on the mesh (jax's partitionable threefry), so a step's batch is the
same, bit for bit, on 1 or N devices and 1 or N processes.
"""

import functools
from typing import Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from research.core import sharding
from research.core.errors import InputError

Transform = Callable[[jax.Array, dict], dict]  # (rng, batch) -> batch, inside jit


class ArrayBatches:
    """Training batches `transform(rng, {name: array[rows]})` from a dict of equally long arrays.

    Integer arrays become int32 and floating ones float32, except uint8 (images, kept small on the device;
    the transform normalises them). `steps_per_epoch` drops the last partial batch."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, mesh: Mesh, seed: int,
                 transform: Transform | None = None):
        sharding.check_batch_divides(batch_size, mesh)
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise InputError(f"arrays of a dataset must be equally long, got lengths {lengths}")
        num_rows = next(iter(lengths.values()))
        if num_rows < batch_size:
            raise InputError(f"batch_size={batch_size} is larger than the dataset ({num_rows} examples)")
        self.arrays = {name: sharding.host_to_global(device_dtype(array), sharding.replicated(mesh))
                       for name, array in arrays.items()}
        self.num_rows = num_rows
        self.mesh = mesh
        self.batch_size = batch_size
        self.steps_per_epoch = num_rows // batch_size
        self._order_key, self._transform_key = _stream_keys(seed, 0)
        self._seed = seed
        self._epoch, self._order = -1, None
        self._gather = jax.jit(functools.partial(_gather_transform, transform=transform),
                               out_shardings=sharding.batch_sharded(mesh))

    def batch(self, step: int) -> dict[str, jax.Array]:
        epoch = step // self.steps_per_epoch
        if epoch != self._epoch:  # one permutation per epoch, not per step
            self._epoch, self._order = epoch, self.epoch_order(epoch)
        return self.batch_in_order(self._order, step)

    def batch_traceable(self, step: jax.Array, stream: jax.Array | int = 0,
                        seed: jax.Array | int | None = None) -> dict[str, jax.Array]:
        """Step `step`'s batch, computed with jax ops only (`step` may be traced, e.g. inside `lax.scan`).

        Stream 0 equals `batch(step)`; other streams draw other data orders and augmentations (for sweeps
        over seeds). `seed` (may be traced) replaces the source's seed: the batch `ArrayBatches(..., seed)`
        would give, from these arrays (research/seeds.py's members)."""
        epoch = step // self.steps_per_epoch
        order_key, transform_key = _stream_keys(self._seed if seed is None else seed, stream)
        return self._slice_and_gather(self._permutation(order_key, epoch), step, transform_key)

    def epoch_order(self, epoch) -> jax.Array:
        """The row order of `epoch` (may be traced): a permutation of the rows."""
        return self._permutation(self._order_key, epoch)

    def batch_in_order(self, order_N: jax.Array, step) -> dict[str, jax.Array]:
        """Step `step`'s batch from its epoch's `epoch_order` (jax ops only: a whole epoch can run in one
        `lax.scan` that draws the permutation once)."""
        return self._slice_and_gather(order_N, step, self._transform_key)

    def _permutation(self, order_key, epoch):
        return jax.random.permutation(jax.random.fold_in(order_key, epoch), self.num_rows)

    def _slice_and_gather(self, order, step, transform_key):
        index = step % self.steps_per_epoch
        indices_B = jax.lax.dynamic_slice_in_dim(order, index * self.batch_size, self.batch_size)
        return self._gather(self.arrays, indices_B, jax.random.fold_in(transform_key, step))


def device_dtype(array: np.ndarray) -> np.ndarray:
    """int32 for integers, float32 for floats, uint8 and bool unchanged."""
    array = np.asarray(array)
    if array.dtype in (np.uint8, np.bool_):
        return array
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int32)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    raise InputError(f"cannot hold an array of dtype {array.dtype} on the device")


def _stream_keys(seed: int, stream) -> tuple[jax.Array, jax.Array]:
    """Keys for the data order and the transform of one stream of batches."""
    key = jax.random.fold_in(jax.random.key(seed), stream)
    return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def _gather_transform(arrays, indices_B, rng, *, transform):
    batch = {name: array[indices_B] for name, array in arrays.items()}
    return batch if transform is None else transform(rng, batch)


def padded_batches(arrays: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Yields evaluation batches of exactly `batch_size` rows, the last one padded with zeros, with `mask`
    marking the real rows, so every example counts once. The name "mask" is therefore reserved (segmentation
    masks travel as "pixel_labels")."""
    if "mask" in arrays:
        raise InputError('"mask" is reserved for the padding mask of evaluation batches: rename that array')
    num_rows = len(next(iter(arrays.values())))
    for start in range(0, num_rows, batch_size):
        rows = {name: np.asarray(array[start:start + batch_size]) for name, array in arrays.items()}
        real = len(next(iter(rows.values())))
        pad = batch_size - real
        batch = {name: np.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) for name, a in rows.items()}
        batch["mask"] = np.concatenate([np.ones(real, bool), np.zeros(pad, bool)])
        yield batch
