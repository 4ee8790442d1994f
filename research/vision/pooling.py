"""Max pooling whose backward pass is fast on a CPU.

XLA:CPU differentiates `nn.max_pool` through select-and-scatter, which is very slow there: in a ResNet-18 train
step at 64x64 (batch 64) the stem's 3x3 max-pool took about two thirds of the step. Here, on a CPU backend, the
pool is the running maximum of the window's shifted, strided slices of the (-inf padded) input, whose gradient is
made of selects and pads. The forward values are the same; the gradient too, except that a window with several
equal maxima shares it among them instead of giving it all to the first. Other platforms use `nn.max_pool`; the
choice is made per lowering platform (`lax.platform_dependent`), so a step lowered for a GPU or TPU on a CPU host
gets `nn.max_pool`.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from research.vision import conv


def max_pool(x_BxHxWxC: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]]) -> jax.Array:
    """`nn.max_pool(x, window, strides, padding)` for NHWC inputs and explicit (low, high) padding pairs."""
    return lax.platform_dependent(x_BxHxWxC, cpu=functools.partial(slice_max_pool, window=window, strides=strides,
                                                                   padding=padding),
                                  default=functools.partial(plain_max_pool, window=window, strides=strides,
                                                            padding=padding))


def plain_max_pool(x_BxHxWxC, window, strides, padding) -> jax.Array:
    """flax's max-pool (reduce_window; select-and-scatter for the gradient): the GPU/TPU branch."""
    return nn.max_pool(x_BxHxWxC, tuple(window), tuple(strides), padding=[tuple(p) for p in padding])


def slice_max_pool(x_BxHxWxC, window, strides, padding) -> jax.Array:
    """The running maximum of the window's shifted slices: the CPU branch."""
    return functools.reduce(jnp.maximum, conv.window_slices(x_BxHxWxC, window, strides, padding, -jnp.inf))
