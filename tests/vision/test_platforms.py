"""The image models' convolutions and max-pools are chosen per lowering platform: a gradient step exported for
`cuda` or `tpu` on this CPU host holds lax's plain convolutions and flax's max-pool (reduce_window and, for the
gradient, select_and_scatter), the same step exported for `cpu` holds the CPU forms (research/vision/conv.py,
pooling.py), and the GPU/TPU branches, forced on the CPU, give the CPU path's outputs and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from research.vision import pooling, resnet, unet
from test_export import plain_kernels  # the CPU branches replaced by the GPU/TPU ones

TINY_SMALL = dict(stage_sizes=(1, 1, 1), stage_widths=(32, 64, 128), stem_width=16)  # 28 -> 14 -> 7 -> 4


def models():
    """(name, model, input shape, has a max-pool): the shapes reach every CPU form: the matmul weight gradient
    (14x14 outputs, 16+ channels), one patch matmul (ResNet-18's 2x2 last stage at 64 px) and the slice max-pool."""
    return [("small_resnet", resnet.small_resnet(10, **TINY_SMALL), (4, 28, 28, 1), False),
            ("resnet18", resnet.resnet18(num_classes=5), (2, 64, 64, 3), True),
            ("unet", unet.UNet(unet.encoder_of(resnet.small_resnet(1, **TINY_SMALL)), num_classes=3),
             (2, 32, 32, 1), False)]


def gradient_fn(model, x_shape):
    """d sum(outputs^2) / d params in training mode (BatchNorm in batch statistics), jitted; and its abstract
    arguments."""
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x_shape), train=False))

    def loss(params, batch_stats, x):
        outputs, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                 mutable=["batch_stats"])
        return jnp.sum(outputs.astype(jnp.float32) ** 2)

    return jax.jit(jax.grad(loss)), (variables["params"], variables["batch_stats"], x)


def num_kernels(params) -> int:
    return sum(leaf.ndim == 4 for leaf in jax.tree.leaves(params))


def exported_text(fn, args, platform: str) -> str:
    return export.export(fn, platforms=[platform])(*args).mlir_module()


@pytest.mark.parametrize("name,model,shape,has_pool", models(), ids=[m[0] for m in models()])
def test_gpu_and_tpu_steps_hold_plain_convolutions_and_pools(name, model, shape, has_pool):
    fn, args = gradient_fn(model, shape)
    kernels = num_kernels(args[0])
    # Every convolution forward, its weight gradient, and its input gradient except the first layer's (whose
    # input is the data) is one stablehlo.convolution: 3 per kernel less one.
    plain = 3 * kernels - 1
    for platform in ("cuda", "tpu"):
        text = exported_text(fn, args, platform)
        assert text.count("stablehlo.convolution") == plain, (platform, text.count("stablehlo.convolution"))
        assert ("stablehlo.select_and_scatter" in text) == has_pool, platform
        assert ("stablehlo.reduce_window" in text) == has_pool, platform
    cpu_text = exported_text(fn, args, "cpu")
    assert cpu_text.count("stablehlo.convolution") < plain  # the matmul forms took some convolutions' place
    assert "select_and_scatter" not in cpu_text


def test_gpu_and_tpu_branches_forced_on_the_cpu_equal_the_cpu_path():
    """ResNet-18 at 64 px (stem max-pool, 2x2 last stage): outputs and gradients with every CPU form against
    the same step with the CPU branch replaced by the GPU/TPU one."""
    model = resnet.resnet18(num_classes=5)
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    variables = model.init(jax.random.key(0), x, train=False)

    def outputs_and_gradients():
        def loss(params):
            outputs, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                                     mutable=["batch_stats"])
            return jnp.sum(outputs ** 2), outputs
        (_, outputs), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
        return np.asarray(outputs), jax.tree.map(np.asarray, grads)

    cpu_outputs, cpu_grads = outputs_and_gradients()
    with plain_kernels(True):
        plain_outputs, plain_grads = outputs_and_gradients()
    assert not np.array_equal(plain_grads["conv1"]["kernel"], cpu_grads["conv1"]["kernel"])  # another program ran
    np.testing.assert_allclose(plain_outputs, cpu_outputs, rtol=1e-4, atol=1e-4)
    for (path, want), (_, got) in zip(jax.tree_util.tree_flatten_with_path(cpu_grads)[0],
                                      jax.tree_util.tree_flatten_with_path(plain_grads)[0]):
        scale = np.abs(want).max() + 1e-12
        assert np.abs(got - want).max() / scale < 1e-4, jax.tree_util.keystr(path)


def test_max_pool_branches_agree_without_ties():
    x = jax.random.normal(jax.random.key(2), (2, 9, 9, 4))
    pool = functools.partial(pooling.max_pool, window=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    plain = functools.partial(pooling.plain_max_pool, window=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(jax.jit(pool)(x), jax.jit(plain)(x))
    grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * jnp.arange(1.0, 1.0 + f(x).size).reshape(f(x).shape)))(x)
    np.testing.assert_array_equal(grad(pool), grad(plain))
