"""research/conv.py: the shifted-matmul weight gradient equals XLA's, and the drop-in equals lax's op."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from research.vision import conv


def _lax_conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("size, kernel, in_channels, out_channels, stride, padding", [
    ((15, 15), (3, 3), 5, 7, (1, 1), "SAME"),
    ((15, 13), (3, 3), 4, 6, (2, 2), "SAME"),
    ((14, 14), (3, 3), 3, 8, (2, 2), "VALID"),
    ((13, 11), (1, 1), 6, 4, (2, 2), "VALID"),
    ((12, 12), (5, 5), 2, 3, (1, 1), ((2, 2), (2, 2))),
    ((16, 9), (3, 1), 3, 5, (2, 1), ((1, 0), (0, 2))),
    ((29, 29), (7, 7), 3, 4, (2, 2), ((3, 3), (3, 3))),
])
def test_weight_gradient_equals_xlas_on_random_shapes(size, kernel, in_channels, out_channels, stride, padding):
    keys = jax.random.split(jax.random.key(sum(size) + in_channels), 3)
    x = jax.random.normal(keys[0], (3, *size, in_channels))
    w = jax.random.normal(keys[1], (*kernel, in_channels, out_channels))
    out = _lax_conv(x, w, stride, padding)
    grad_out = jax.random.normal(keys[2], out.shape)
    (expected,) = jax.vjp(lambda w: _lax_conv(x, w, stride, padding), w)[1](grad_out)
    pads = lax.padtype_to_pads(size, kernel, stride, padding) if isinstance(padding, str) else padding
    got = conv.weight_gradient(x, grad_out, w.shape, stride, pads)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(jnp.abs(expected).max()))


def test_drop_in_output_and_both_gradients_equal_lax_and_use_the_matmul_gradient():
    x = jax.random.normal(jax.random.key(0), (4, 15, 15, 16))
    w = jax.random.normal(jax.random.key(1), (3, 3, 16, 8))
    assert conv.uses_matmul_gradient(15 * 15, 16)  # this size takes the custom gradient (CPU)
    loss = lambda f: (lambda x, w: jnp.sum(jnp.sin(f(x, w, (1, 1), ((1, 1), (1, 1))))))
    drop_in = lambda x, w, strides, pads: conv.conv_general_dilated(
        x, w, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = jax.jit(jax.value_and_grad(loss(drop_in), argnums=(0, 1)))(x, w)
    plain = jax.jit(jax.value_and_grad(loss(_lax_conv), argnums=(0, 1)))(x, w)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))
    text = jax.jit(jax.grad(loss(drop_in), argnums=1)).lower(x, w).as_text()
    assert text.count("dot_general") == 9  # the weight gradient's nine matmuls


def test_flax_conv_with_the_drop_in_has_the_same_parameters_and_outputs():
    x = jax.random.normal(jax.random.key(2), (2, 16, 16, 3))
    plain, ours = nn.Conv(8, (3, 3), (2, 2)), nn.Conv(8, (3, 3), (2, 2), conv_general_dilated=conv.conv_general_dilated)
    params = plain.init(jax.random.key(3), x)
    assert jax.tree.structure(ours.init(jax.random.key(3), x)) == jax.tree.structure(params)
    np.testing.assert_allclose(ours.apply(params, x), plain.apply(params, x), rtol=1e-6, atol=1e-6)
    grads = [jax.grad(lambda p, m=m: jnp.sum(m.apply(p, x) ** 2))(params) for m in (ours, plain)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("size, in_channels, stride, padding", [
    ((2, 2), 16, (1, 1), ((1, 1), (1, 1))),
    ((4, 3), 8, (2, 2), ((1, 1), (1, 1))),
    ((3, 3), 8, (1, 1), "VALID"),
])
def test_small_outputs_run_as_one_patch_matmul_equal_to_lax(size, in_channels, stride, padding):
    keys = jax.random.split(jax.random.key(size[0] * 7 + in_channels), 2)
    x = jax.random.normal(keys[0], (5, *size, in_channels))
    w = jax.random.normal(keys[1], (3, 3, in_channels, 6))
    drop_in = lambda x, w: conv.conv_general_dilated(x, w, stride, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    loss = lambda f: (lambda x, w: jnp.sum(jnp.sin(f(x, w))))
    text = jax.jit(drop_in).lower(x, w).as_text()
    assert "convolution" not in text and "dot_general" in text  # the patches' matmul, not XLA's convolution
    ours = jax.value_and_grad(loss(drop_in), argnums=(0, 1))(x, w)
    plain = jax.value_and_grad(loss(lambda x, w: _lax_conv(x, w, stride, padding)), argnums=(0, 1))(x, w)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_max_pool_by_slices_equals_flax_and_its_gradient_without_ties():
    from research.vision import pooling
    x = jax.random.normal(jax.random.key(4), (2, 9, 8, 3))  # no ties: continuous values
    pads = [(1, 1), (1, 1)]
    np.testing.assert_array_equal(pooling.max_pool(x, (3, 3), (2, 2), pads),
                                  nn.max_pool(x, (3, 3), (2, 2), padding=pads))
    grads = [jax.grad(lambda x, f=f: jnp.sum(f(x) ** 2))(x) for f in (
        lambda x: pooling.max_pool(x, (3, 3), (2, 2), pads), lambda x: nn.max_pool(x, (3, 3), (2, 2), padding=pads))]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6)
