"""He/Kaiming initialisation statistics and the ResNet family's layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.core.init import he_normal_fan_in, he_normal_fan_out
from research.vision import resnet


def test_he_fan_out_variance():
    kernel = he_normal_fan_out(jax.random.key(0), (3, 3, 64, 128))
    expected = 2.0 / (3 * 3 * 128)
    assert abs(float(jnp.var(kernel)) / expected - 1) < 0.03
    assert abs(float(jnp.mean(kernel))) < 0.01 * np.sqrt(expected) * 10


def test_he_fan_in_preserves_relu_activation_scale():
    # Through 10 ReLU layers with He fan-in init, the mean square activation stays of order 1.
    x = jax.random.normal(jax.random.key(1), (4096, 256))
    for layer in range(10):
        w = he_normal_fan_in(jax.random.key(layer + 2), (256, 256))
        x = jax.nn.relu(x @ w)
    assert 0.5 < float(jnp.mean(x ** 2)) < 2.0


def test_resnet_convs_use_he_init():
    model = resnet.resnet18(num_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)["params"]
    kernel = params["layer3_0"]["conv2"]["kernel"]  # 3x3x256x256
    assert kernel.shape == (3, 3, 256, 256)
    assert abs(float(jnp.var(kernel)) / (2.0 / (9 * 256)) - 1) < 0.03


@pytest.mark.parametrize("builder, torchvision_count", [
    (resnet.resnet18, 11_689_512), (resnet.resnet34, 21_797_672), (resnet.resnet50, 25_557_032)])
def test_resnet_parameter_counts_match_torchvision(builder, torchvision_count):
    model = builder(num_classes=1000)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))
    count = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))
    assert count == torchvision_count


def test_small_resnet_logits_shape_and_zero_init_residual():
    model = resnet.small_resnet(num_classes=10, zero_init_residual=True)
    variables = model.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)), train=False)
    assert model.apply(variables, jnp.ones((2, 28, 28, 1)), train=False).shape == (2, 10)
    assert float(jnp.abs(variables["params"]["layer1_0"]["bn2"]["scale"]).sum()) == 0.0


@pytest.mark.parametrize("shape, fan_in, fan_out", [
    ((3, 3, 16, 256), 3 * 3 * 16, 3 * 3 * 256),  # a conv widening 16x
    ((1024, 64), 1024, 64)])  # a dense layer narrowing 16x
def test_he_variances_follow_fan_in_and_fan_out_where_they_differ(shape, fan_in, fan_out):
    """Fan-in and fan-out differ 16x here, so a swapped mode is off by 16x (a square kernel cannot tell)."""
    for init, fan in ((he_normal_fan_in, fan_in), (he_normal_fan_out, fan_out)):
        kernel = init(jax.random.key(3), shape)
        assert abs(float(jnp.var(kernel)) / (2.0 / fan) - 1) < 0.05, (init, shape)


def test_resnet_widening_conv_uses_torchvisions_fan_out():
    """layer2_0/conv1 is 3x3x32x64 in this small ResNet: fan-out (9 * 64) and fan-in (9 * 32) differ 2x."""
    model = resnet.small_resnet(num_classes=10, stage_widths=(32, 64, 128), stem_width=32)
    params = jax.jit(lambda key: model.init(key, jnp.zeros((1, 28, 28, 1)), train=False))(jax.random.key(0))["params"]
    kernel = params["layer2_0"]["conv1"]["kernel"]
    assert kernel.shape == (3, 3, 32, 64)
    assert abs(float(jnp.var(kernel)) / (2.0 / (9 * 64)) - 1) < 0.1
