"""A drop-in for `lax.conv_general_dilated` whose weight gradient runs as matmuls on a CPU.

XLA:CPU computes a convolution's weight gradient as another convolution whose window is the whole image. For
32-64 channels at 14x14 and above it runs at 25-30 GFLOP/s, where a matmul of the same size runs at 80-165
(docs/benchmarks.md). Here the forward pass and the input gradient are lax's own, and the weight gradient is a
sum over the kernel's offsets: for offset (i, j), the input shifted by (i, j) and strided, as a
(batch * positions) x C_in matrix, transposed, times the output gradient as (batch * positions) x C_out.

Used for 2-D NHWC x HWIO convolutions without dilation or groups, on a CPU backend, when the convolution's output
has `MIN_POSITIONS` to `MAX_POSITIONS` positions per image and at least `MIN_IN_CHANNELS` input channels (where
it was measured faster; elsewhere XLA's own is as fast or faster). Outputs of at most `MAX_IM2COL_POSITIONS`
positions (the last stage of a ResNet on small images) run wholly as one matmul of their patches
(`im2col_conv`). Anything else, and every convolution on GPU and TPU (cuDNN's and the TPU's are fast), is lax's
op unchanged. Pass it to flax as `nn.Conv(..., conv_general_dilated=conv.conv_general_dilated)`; parameters and
their names do not change.

The choice is made per lowering platform (`lax.platform_dependent`), not by the host's default backend: a step
lowered on a CPU host for a GPU or TPU (`jax.export`, ahead-of-time compilation) gets the plain op, and one
exported for several platforms carries both, chosen where it runs.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

# Where the matmul weight gradient was measured faster (scripts/bench.py's machine, docs/benchmarks.md): 14x14
# outputs with 32 channels 2.2x, 16x16 with 64-128 channels 1.1-1.9x; about even at 32x32 and 64x64 (0.99-1.03x,
# and a U-Net step 10% slower with them); slower at 7x7-8x8 with 64-128 channels (0.75x) and with 1-3 input
# channels (0.5-0.75x).
MIN_POSITIONS, MAX_POSITIONS = 100, 400  # output height x width
MIN_IN_CHANNELS = 16
# At 2x2 outputs and below, XLA:CPU's own convolution is pathologically slow (512 channels, batch 64: 1.1 s
# forward, against 7.6 ms as one matmul of the patches), so those run as that matmul, gradients included.
MAX_IM2COL_POSITIONS = 4
_NHWC_HWIO = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
    """`lax.conv_general_dilated`; lowered for a CPU, `cpu_conv` (the matmul forms where they pay)."""
    conv_args = dict(window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
                     rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                     feature_group_count=feature_group_count, batch_group_count=batch_group_count,
                     precision=precision, preferred_element_type=preferred_element_type)
    return lax.platform_dependent(lhs, rhs, cpu=functools.partial(cpu_conv, **conv_args),
                                  default=functools.partial(lax.conv_general_dilated, **conv_args))


def cpu_conv(lhs, rhs, *, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
             feature_group_count=1, batch_group_count=1, precision=None, preferred_element_type=None) -> jax.Array:
    """The CPU branch: one matmul of the patches for outputs of at most `MAX_IM2COL_POSITIONS` positions, the
    shifted-matmul weight gradient where `uses_matmul_gradient`, else lax's own op."""
    plain = functools.partial(lax.conv_general_dilated, lhs, rhs, window_strides, padding,
                              lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                              dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
                              batch_group_count=batch_group_count, precision=precision,
                              preferred_element_type=preferred_element_type)
    if feature_group_count != 1 or batch_group_count != 1 or preferred_element_type is not None:
        return plain()
    if lhs.ndim != 4 or any(d != 1 for d in (lhs_dilation or (1, 1)) + (rhs_dilation or (1, 1))):
        return plain()
    if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != _NHWC_HWIO:
        return plain()
    strides = tuple(int(s) for s in window_strides)
    pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding) if isinstance(padding, str)
            else padding)
    pads = tuple((int(low), int(high)) for low, high in pads)
    if any(p < 0 for pair in pads for p in pair):
        return plain()
    out_positions = 1
    for size, kernel, stride, (low, high) in zip(lhs.shape[1:3], rhs.shape[:2], strides, pads):
        out_positions *= (size + low + high - kernel) // stride + 1
    if out_positions <= MAX_IM2COL_POSITIONS:
        return im2col_conv(lhs, rhs, strides, pads, precision)
    if not uses_matmul_gradient(out_positions, rhs.shape[2]):
        return plain()
    return _conv(lhs, rhs, strides, pads, precision)


def uses_matmul_gradient(out_positions: int, in_channels: int) -> bool:
    """Whether a convolution of this size gets the shifted-matmul weight gradient (CPU backends only)."""
    return MIN_POSITIONS <= out_positions <= MAX_POSITIONS and in_channels >= MIN_IN_CHANNELS


def im2col_conv(x_BxHxWxI, kernel_hxwxIxO, strides, pads, precision=None) -> jax.Array:
    """The convolution as one matmul of its patches (batch * positions) x (kh * kw * I) by the kernel
    (kh * kw * I) x O; differentiated as such (slices, a concatenation and matmuls)."""
    kh, kw, in_channels, out_channels = kernel_hxwxIxO.shape
    patches = jnp.concatenate(window_slices(x_BxHxWxI, (kh, kw), strides, pads), axis=-1)
    out = jnp.dot(patches.reshape(-1, kh * kw * in_channels), kernel_hxwxIxO.reshape(-1, out_channels),
                  precision=precision)
    return out.reshape(*patches.shape[:3], out_channels)


def window_slices(x_BxHxWxC, window, strides, pads, pad_value: float = 0.0) -> list[jax.Array]:
    """For each offset (i, j) of a window (row-major), the padded input at that offset, strided like the output
    of a convolution or pooling with that window: B x out_h x out_w x C each."""
    (top, bottom), (left, right) = pads
    padded = jnp.pad(x_BxHxWxC, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad_value)
    batch, height, width, channels = padded.shape
    out_h, out_w = (height - window[0]) // strides[0] + 1, (width - window[1]) // strides[1] + 1
    return [lax.slice(padded, (0, i, j, 0),
                      (batch, i + (out_h - 1) * strides[0] + 1, j + (out_w - 1) * strides[1] + 1, channels),
                      (1, strides[0], strides[1], 1))
            for i in range(window[0]) for j in range(window[1])]


def _lax_conv(x, w, strides, pads, precision):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, pads, precision):
    return _lax_conv(x, w, strides, pads, precision)


def _conv_fwd(x, w, strides, pads, precision):
    return _lax_conv(x, w, strides, pads, precision), (x, w)


def _conv_bwd(strides, pads, precision, residuals, grad_out):
    x, w = residuals
    _, input_vjp = jax.vjp(lambda x: _lax_conv(x, w, strides, pads, precision), x)
    (grad_x,) = input_vjp(grad_out)
    return grad_x, weight_gradient(x, grad_out, w.shape, strides, pads).astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def weight_gradient(x_BxHxWxI, grad_BxPxQxO, kernel_shape, strides, pads) -> jax.Array:
    """d loss / d kernel (kh x kw x I x O) of a NHWC x HWIO convolution, as kh * kw matmuls: for each kernel offset,
    the padded input at that offset (strided like the output) times the output gradient, summed over the batch and
    the output positions (float32 accumulation)."""
    kh, kw, in_channels, out_channels = kernel_shape
    grad_NxO = grad_BxPxQxO.reshape(-1, out_channels)
    per_offset = [lax.dot_general(shifted.reshape(-1, in_channels), grad_NxO, (((0,), (0,)), ((), ())),
                                  preferred_element_type=jnp.float32)
                  for shifted in window_slices(x_BxHxWxI, (kh, kw), strides, pads)]
    return jnp.stack(per_offset).reshape(kh, kw, in_channels, out_channels)
