"""A dynamic U-Net (fastai's `DynamicUnet`) over any of our ResNets, in Flax linen (NHWC).

The encoder is a ResNet body with torchvision's parameter names (`conv1`, `bn1`, `layer1_0/...`), under the
scope `encoder`, so ImageNet weights load into it (`load_torchvision_encoder`). The decoder is built at trace
time from the encoder's own feature maps: the last feature map at each resolution is a skip connection, the
deepest one goes through a middle block, and each up-block doubles the resolution (pixel shuffle with ICNR
initialisation, or a transposed convolution), joins the skip (BatchNorm on it, concatenation, ReLU) and runs two
3x3 convolutions; a final residual block at the input's resolution also sees the input itself (fastai's
`last_cross`) and a 1x1 convolution gives per-pixel logits. Odd sizes work: the encoder's strided layers
round up (ceil(H / 2)), so each upsampled map is cropped to its skip's size, and the output always has the
input's height and width.

Decoder widths follow the encoder: an up-block is as wide as its skip, the final block half the shallowest
skip. On XLA:CPU the weight gradients of narrow convolutions at high resolution are slow, so the small ResNet
encoders for 64 px inputs downsample in their stem and keep the full-resolution block narrow.

Freezing (fastai's `freeze` / `unfreeze`): the parameters fall into three layer groups (the encoder's two,
as `ResNet.layer_groups`, then the decoder); `frozen_groups=n` runs the first n groups' BatchNorm on running
statistics and stops gradients at their outputs (skips included), and `make_optimizer(frozen=...)` gives
them no update.
"""

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.core.errors import InputError
from research.core.init import he_normal_fan_out
from research.vision import pretrained
from research.vision.resnet import batch_norm, body, conv, ResNet, split_stage


class ResNetEncoder(nn.Module):
    """A ResNet body (the fields of `research.models.resnet.ResNet`, without the head) returning its feature
    maps: the stem's (after ReLU, before any max-pool), then each stage's output, input side first."""
    stage_sizes: Sequence[int]
    block_cls: type
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    stage_strides: Sequence[int] = (1, 2, 2, 2)
    stem_width: int = 64
    stem_kernel: int = 7
    stem_stride: int = 2
    stem_pool: bool = True
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    group_split: int | None = None

    def split(self) -> int:
        return split_stage(self.stage_sizes, self.group_split)

    @nn.compact
    def __call__(self, x_BxHxWxC, train: bool = True, frozen_groups: int = 0) -> list[jax.Array]:
        split = self.split()
        group_train = [train and group >= frozen_groups for group in range(2)]
        out = lambda y, group: jax.lax.stop_gradient(y) if group < frozen_groups else y
        stem, stages = body(self, x_BxHxWxC, group_train, split, lambda x, stage, group: out(x, group))
        return [out(stem, 0), *stages]


def encoder_of(model: ResNet) -> ResNetEncoder:
    """The body of one of our ResNets (resnet18/34/50(...), small_resnet(...)) as a U-Net encoder."""
    return ResNetEncoder(stage_sizes=tuple(model.stage_sizes), block_cls=model.block_cls,
                         stage_widths=tuple(model.stage_widths), stage_strides=tuple(model.stage_strides),
                         stem_width=model.stem_width, stem_kernel=model.stem_kernel, stem_stride=model.stem_stride,
                         stem_pool=model.stem_pool, zero_init_residual=model.zero_init_residual, dtype=model.dtype,
                         group_split=model.group_split)


def skip_features(features: Sequence[jax.Array]) -> list[jax.Array]:
    """The last feature map at each resolution (the one just before the size changes), input side first;
    the final entry is the deepest map, the decoder's input."""
    chosen = []
    for feature in features:
        if chosen and chosen[-1].shape[1:3] == feature.shape[1:3]:
            chosen[-1] = feature
        else:
            chosen.append(feature)
    return chosen


# --- decoder pieces ----------------------------------------------------------------------------------------

def icnr(factor: int, base_init=he_normal_fan_out):
    """ICNR initialisation (Aitken et al. 2017) of the convolution before a pixel shuffle by `factor`: every
    output channel's factor^2 sub-pixel copies start equal, so the shuffle starts as nearest-neighbour
    upsampling (no checkerboard)."""

    def init(key, shape, dtype=jnp.float32):
        *spatial, features_in, features_out = shape
        sub = base_init(key, (*spatial, features_in, features_out // factor ** 2), dtype)
        return jnp.tile(sub, (1,) * (len(shape) - 1) + (factor ** 2,))

    return init


def pixel_shuffle(x_BxHxWxC, factor: int) -> jax.Array:
    """B x H x W x (f*f*C) -> B x fH x fW x C; input channel (dy * f + dx) * C + c lands at sub-pixel (dy, dx)."""
    batch, height, width, channels = x_BxHxWxC.shape
    c = channels // factor ** 2
    y = x_BxHxWxC.reshape(batch, height, width, factor, factor, c).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(batch, height * factor, width * factor, c)


class ConvBNReLU(nn.Module):
    features: int
    kernel: int = 3
    relu: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = conv(self.features, self.kernel, 1, "conv", self.dtype)(x)
        x = batch_norm(train, "bn", self.dtype)(x)
        return nn.relu(x) if self.relu else x


class Upsample(nn.Module):
    """Upsampling by an integer `factor`: a 1x1 convolution (ICNR) + BN + ReLU then a pixel shuffle, or a
    transposed convolution + BN + ReLU."""
    features: int
    factor: int
    transpose: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        f = self.factor
        if self.transpose:
            x = nn.ConvTranspose(self.features, (f, f), (f, f), use_bias=False, kernel_init=he_normal_fan_out,
                                 dtype=self.dtype, name="conv")(x)
            return nn.relu(batch_norm(train, "bn", self.dtype)(x))
        x = nn.Conv(self.features * f * f, (1, 1), use_bias=False, kernel_init=icnr(f), dtype=self.dtype,
                    name="conv")(x)
        return pixel_shuffle(nn.relu(batch_norm(train, "bn", self.dtype)(x)), f)


def upsample_to(module_kwargs: dict, x, size_hw: tuple[int, int], train: bool, name: str):
    """x upsampled by the integer factor that covers `size_hw`, cropped to it (top-left aligned, as the strided
    convolutions that halved it)."""
    factor = max(math.ceil(size_hw[0] / x.shape[1]), math.ceil(size_hw[1] / x.shape[2]))
    y = Upsample(factor=factor, name=name, **module_kwargs)(x, train)
    return y[:, :size_hw[0], :size_hw[1]]


class UpBlock(nn.Module):
    """fastai's UnetBlock: upsample to the skip's size (half the channels), BN on the skip, concatenate, ReLU,
    two 3x3 conv-BN-ReLU of `features`."""
    features: int
    transpose: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, skip, train: bool):
        up = dict(features=max(x.shape[-1] // 2, 1), transpose=self.transpose, dtype=self.dtype)
        x = upsample_to(up, x, skip.shape[1:3], train, "up")
        x = nn.relu(jnp.concatenate([x, batch_norm(train, "skip_bn", self.dtype)(skip)], -1))
        x = ConvBNReLU(self.features, dtype=self.dtype, name="conv1")(x, train)
        return ConvBNReLU(self.features, dtype=self.dtype, name="conv2")(x, train)


class Decoder(nn.Module):
    """The decoder, shaped by the encoder's feature maps (see the module docstring)."""
    num_classes: int
    final_width: int | None = None
    transpose: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jax.Array], x_BxHxWxC, train: bool):
        *skips, deepest = skip_features(features)
        width = deepest.shape[-1]
        y = nn.relu(batch_norm(train, "bn", self.dtype)(deepest))
        y = ConvBNReLU(width, dtype=self.dtype, name="middle1")(y, train)
        y = ConvBNReLU(width, dtype=self.dtype, name="middle2")(y, train)
        for i, skip in enumerate(reversed(skips)):
            y = UpBlock(skip.shape[-1], self.transpose, self.dtype, name=f"up{i + 1}")(y, skip, train)
        final_width = self.final_width or max(skips[0].shape[-1] // 2 if skips else width // 2, 1)
        size_hw = x_BxHxWxC.shape[1:3]
        if y.shape[1:3] != size_hw:
            up = dict(features=final_width, transpose=self.transpose, dtype=self.dtype)
            y = upsample_to(up, y, size_hw, train, "final_up")
        y = jnp.concatenate([y, x_BxHxWxC.astype(y.dtype)], -1)  # fastai's last_cross
        shortcut = ConvBNReLU(final_width, 1, relu=False, dtype=self.dtype, name="final_shortcut")(y, train)
        z = ConvBNReLU(final_width, dtype=self.dtype, name="final1")(y, train)
        z = ConvBNReLU(final_width, relu=False, dtype=self.dtype, name="final2")(z, train)
        y = nn.relu(z + shortcut)
        return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="logits")(y)


class UNet(nn.Module):
    """`__call__(images_BxHxWxC, train) -> logits_BxHxWxK` (float32), any height and width.

    encoder: `encoder_of(resnet.resnet34(num_classes=1))`, `encoder_of(resnet.small_resnet(...))`, ...
    upsample: "shuffle" (pixel shuffle with ICNR, fastai's default) or "transpose" (transposed convolution).
    final_width: the full-resolution block's width; None: half the shallowest skip's channels.
    frozen_groups: 0 trains everything, 1 freezes the encoder's first group, 2 the whole encoder.
    """
    encoder: ResNetEncoder
    num_classes: int
    upsample: str = "shuffle"
    final_width: int | None = None
    frozen_groups: int = 0
    dtype: Any = jnp.float32

    def layer_groups(self) -> tuple[str, str, str]:
        """Regexes over parameter paths (`optimizers.param_path`): the encoder's two groups (stem and the first
        half of the stages, the rest), then the decoder. For `make_optimizer`'s `frozen` / `lr_multipliers`."""
        split = self.encoder.split()
        stages = [rf"layer{stage + 1}_\d+" for stage in range(len(self.encoder.stage_sizes))]
        return (f"^encoder/({'|'.join(['conv1', 'bn1', *stages[:split]])})/",
                f"^encoder/({'|'.join(stages[split:])})/", "^decoder/")

    @nn.compact
    def __call__(self, x_BxHxWxC, train: bool = True):
        if self.upsample not in ("shuffle", "transpose"):
            raise InputError(f"UNet upsample={self.upsample!r} must be 'shuffle' or 'transpose'")
        if not 0 <= self.frozen_groups <= 2:
            raise InputError(f"UNet frozen_groups={self.frozen_groups} must be 0, 1 or 2 (the decoder always trains)")
        features = self.encoder(x_BxHxWxC, train, self.frozen_groups)
        logits = Decoder(self.num_classes, self.final_width, self.upsample == "transpose", self.dtype,
                         name="decoder")(features, x_BxHxWxC, train)
        return logits.astype(jnp.float32)


# --- pretrained encoders -----------------------------------------------------------------------------------

ENCODER_VARIABLES = ("^[a-z_]+/decoder/",)  # what a pretrained encoder leaves as initialised


def load_encoder(variables: dict, body: dict, source: str = "weights") -> dict:
    """`variables` (a UNet's, e.g. from `model.init` or `jax.eval_shape`) with the encoder replaced by a ResNet's
    body variables `body` ({"params", "batch_stats"} in our ResNet's names, e.g. a trained classifier's); the
    classifier's `fc`/`head` is ignored, the decoder keeps its values. Names and shapes are checked."""
    loaded = {collection: {"encoder": {k: v for k, v in body.get(collection, {}).items() if k not in ("fc", "head")}}
              for collection in variables}
    return pretrained.load_into(variables, loaded, skip=ENCODER_VARIABLES, source=source)


def load_torchvision_encoder(variables: dict, path: str) -> dict:
    """A torchvision/timm ResNet checkpoint (.pth or .safetensors) loaded into a UNet's encoder."""
    body = pretrained.torchvision_resnet_variables(pretrained.read_state_dict(path))
    return load_encoder(variables, body, source=path)


def init_variables(model: UNet, rng: jax.Array, input_shape: tuple[int, ...]) -> dict:
    """{"params", "batch_stats"} of `model` on a dummy batch of `input_shape` (jitted, host arrays)."""
    init = jax.jit(functools.partial(model.init, train=False))
    return jax.device_get(init(rng, np.zeros(input_shape, np.float32)))
