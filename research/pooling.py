"""Max pooling whose backward pass is fast on a CPU.

XLA:CPU differentiates `nn.max_pool` through select-and-scatter, which is very slow there: in a ResNet-18 train
step at 64x64 (batch 64) the stem's 3x3 max-pool took about two thirds of the step. Here, on a CPU backend, the
pool is the running maximum of the window's shifted, strided slices of the (-inf padded) input, whose gradient is
made of selects and pads. The forward values are the same; the gradient too, except that a window with several
equal maxima shares it among them instead of giving it all to the first. Other backends use `nn.max_pool`.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def max_pool(x_BxHxWxC: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]]) -> jax.Array:
    """`nn.max_pool(x, window, strides, padding)` for NHWC inputs and explicit (low, high) padding pairs."""
    if jax.default_backend() != "cpu":
        return nn.max_pool(x_BxHxWxC, tuple(window), tuple(strides), padding=[tuple(p) for p in padding])
    (top, bottom), (left, right) = padding
    padded = jnp.pad(x_BxHxWxC, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-jnp.inf)
    batch, height, width, channels = padded.shape
    out_h = (height - window[0]) // strides[0] + 1
    out_w = (width - window[1]) // strides[1] + 1
    pooled = None
    for i in range(window[0]):
        for j in range(window[1]):
            shifted = lax.slice(padded, (0, i, j, 0),
                                (batch, i + (out_h - 1) * strides[0] + 1, j + (out_w - 1) * strides[1] + 1, channels),
                                (1, strides[0], strides[1], 1))
            pooled = shifted if pooled is None else jnp.maximum(pooled, shifted)
    return pooled
