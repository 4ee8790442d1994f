"""The train state: step, parameters, BatchNorm statistics, optimizer state and an optional recurrent carry,
as one pytree."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the model's non-trainable state: `batch_stats` (BatchNorm) and `carry`, a recurrent
    state carried from one batch to the next (e.g. an LSTM's hidden state over BPTT windows). The carry is
    batch-major (every leaf's first axis is the batch), so `sharding.state_shardings` splits it like a batch;
    None for models without one."""
    batch_stats: Any = None
    carry: Any = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       input_shape: tuple[int, ...]) -> TrainState:
    """Initialises `model` on a dummy batch of `input_shape` and the optimizer on its parameters.

    The initialisation is jitted: one compilation instead of one per operation and shape (3-4x less time on
    CPU; a key with impl="rbg" compiles faster still than the default threefry)."""
    init = jax.jit(functools.partial(model.init, train=False))
    variables = init(rng, jnp.zeros(input_shape, jnp.float32))
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables.get("batch_stats", {}), tx=tx)
