"""A whole epoch of training steps as one compiled program: a `lax.scan` over the epoch's steps, each drawing
its batch as `ArrayBatches.batch(step)` does (the epoch's permutation drawn once, outside the scan) and its
dropout key as the trainer does (`fold_in(key(seed), step)`), so an epoch-step equals `steps_per_epoch`
trainer steps.

It plugs into the unchanged trainer as a train step and a batch source whose "step" is an epoch: the trainer
then jits one epoch, checkpoints and evaluates per epoch, and resumes exactly (the batches stay a pure function
of (seed, step)). For tiny embedding models the host's per-step dispatch dominates a loop of jitted steps;
the scan removes it (measured in experiments/movielens.py).
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from research.core.arrays import ArrayBatches


class EpochBatches:
    """A batch source for the trainer whose step t is epoch t: `batch(t)` is {"epoch_1": [t]} (one row, so
    the trainer's batch sharding applies on a one-device mesh)."""

    def __init__(self, batches: ArrayBatches):
        self.batches = batches
        self.steps_per_epoch = 1
        self.inner_steps = batches.steps_per_epoch

    def batch(self, epoch: int) -> dict:
        return {"epoch_1": np.array([epoch], np.int32)}


def make_epoch_step(train_step: Callable, batches: ArrayBatches, seed: int, unroll: int = 1) -> Callable:
    """`epoch_step(state, {"epoch_1": [e]}, rng) -> (state, metrics summed over the epoch)`: the steps
    e * S .. (e + 1) * S - 1 of `train_step` (S = batches.steps_per_epoch) in one `lax.scan`. The trainer's
    rng argument is ignored: step t uses fold_in(key(seed), t), the key the trainer's step loop would pass."""
    steps = batches.steps_per_epoch
    key = jax.random.key(seed)

    def epoch_step(state, epoch_batch: dict, rng):
        del rng
        epoch = epoch_batch["epoch_1"][0]
        # the permutation once per epoch (batch_traceable would redraw the 80k-row permutation at every step)
        order_N = batches.epoch_order(epoch)

        def step_at(state, index):
            step = epoch * steps + index
            batch = batches.batch_in_order(order_N, step)
            return train_step(state, batch, jax.random.fold_in(key, step))

        def body(carry, index):
            state, summed = carry
            state, metrics = step_at(state, index)
            return (state, jax.tree.map(jnp.add, summed, metrics)), None

        state, summed = step_at(state, 0)  # outside the scan: fixes the metrics' structure for the carry
        (state, summed), _ = jax.lax.scan(body, (state, summed), jnp.arange(1, steps), unroll=unroll)
        return state, summed

    return epoch_step
