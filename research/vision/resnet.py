"""ResNets with torchvision's layout, in Flax linen (NHWC).

Submodule names follow torchvision (`conv1`, `bn1`, `layer1_0.conv1`, `layer1_0.downsample_conv`, `fc`) so
that ImageNet weights published for PyTorch map onto ours one to one (`research/pretrained.py`). The stem is
configurable: the ImageNet stem (7x7 stride-2 conv + max-pool) for large images, or a 3x3 stem without pooling
for 28-32 px images (`small_resnet`).

Transfer learning (fastai's lessons 1-2): `head` replaces torchvision's pooled `fc` with another classifier
(e.g. `research.models.head.FastaiHead`), and the parameters fall into fastai's three layer groups (stem and
the first half of the stages, the second half, the head; `layer_groups`). `frozen_groups=n` freezes the first n
groups inside the model: their BatchNorm layers run on their running statistics even when training, and no
gradient flows back into them (so the backward pass skips them). The optimizer masks the same groups
(`make_optimizer(frozen=...)`), so they get no update at all, weight decay included.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.core.errors import InputError
from research.core.init import he_normal_fan_out
from research.vision import conv as conv_ops, pooling


def conv(features: int, kernel: int, stride: int, name: str, dtype: Any) -> nn.Conv:
    """A bias-free "same" convolution, He-initialised (fan out), as torchvision's ResNets; on a CPU its weight
    gradient runs as matmuls where that is faster (research/conv.py)."""
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=[(kernel // 2, kernel // 2)] * 2,
                   use_bias=False, kernel_init=he_normal_fan_out, dtype=dtype, name=name,
                   conv_general_dilated=conv_ops.conv_general_dilated)


def batch_norm(train: bool, name: str, dtype: Any, zero_scale: bool = False) -> nn.BatchNorm:
    """BatchNorm with torchvision's momentum and epsilon; `train` uses and updates batch statistics."""
    # torch's momentum 0.1 is flax's momentum 0.9 (weight of the old running average).
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones, name=name)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (resnet18/34)."""
    features: int
    stride: int = 1
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x_BxHxWxC, train: bool):
        y = conv(self.features, 3, self.stride, "conv1", self.dtype)(x_BxHxWxC)
        y = nn.relu(batch_norm(train, "bn1", self.dtype)(y))
        y = conv(self.features, 3, 1, "conv2", self.dtype)(y)
        y = batch_norm(train, "bn2", self.dtype, self.zero_init_residual)(y)
        return nn.relu(y + _shortcut(x_BxHxWxC, self.features, self.stride, train, self.dtype))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as torchvision v1.5), 1x1 expand by 4 (resnet50 and deeper)."""
    features: int
    stride: int = 1
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x_BxHxWxC, train: bool):
        y = conv(self.features, 1, 1, "conv1", self.dtype)(x_BxHxWxC)
        y = nn.relu(batch_norm(train, "bn1", self.dtype)(y))
        y = conv(self.features, 3, self.stride, "conv2", self.dtype)(y)
        y = nn.relu(batch_norm(train, "bn2", self.dtype)(y))
        y = conv(self.features * 4, 1, 1, "conv3", self.dtype)(y)
        y = batch_norm(train, "bn3", self.dtype, self.zero_init_residual)(y)
        return nn.relu(y + _shortcut(x_BxHxWxC, self.features * 4, self.stride, train, self.dtype))


def _shortcut(x, features: int, stride: int, train: bool, dtype: Any):
    """Identity, or torchvision's `downsample` (1x1 strided conv + BN) when the shape changes."""
    if x.shape[-1] == features and stride == 1:
        return x
    x = conv(features, 1, stride, "downsample_conv", dtype)(x)
    return batch_norm(train, "downsample_bn", dtype)(x)


class ResNet(nn.Module):
    """A ResNet body and a classifier head. `__call__(images_BxHxWxC, train) -> logits_BxK`.

    head: None for torchvision's classifier (global average pool, then the linear `fc`), else a callable that
      builds the head module from `num_classes` (e.g. `functools.partial(FastaiHead, hidden=(512,))`); it is
      named `head` and called as `head(features_BxHxWxC, train)`.
    frozen_groups: how many of the layer groups, from the input on, are frozen (fastai's `freeze_to`):
      0 trains everything, 2 freezes the whole body (fastai's `freeze`).
    group_split: the stage that starts the second body group (default: half the stages; layer3 of 4).
    """
    stage_sizes: Sequence[int]
    block_cls: type
    num_classes: int
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    stage_strides: Sequence[int] = (1, 2, 2, 2)
    stem_width: int = 64
    stem_kernel: int = 7
    stem_stride: int = 2
    stem_pool: bool = True
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    head: Callable[..., nn.Module] | None = None
    frozen_groups: int = 0
    group_split: int | None = None

    def split(self) -> int:
        return split_stage(self.stage_sizes, self.group_split)

    def layer_groups(self) -> tuple[str, str, str]:
        """Regexes over parameter paths (`optimizers.param_path`) of fastai's three layer groups: the stem and
        the stages before `group_split`, the remaining stages, the head. Use them for `make_optimizer`'s
        `frozen` and `lr_multipliers` (lr/9, lr/3, lr)."""
        split = self.split()
        stages = [rf"layer{stage + 1}_\d+" for stage in range(len(self.stage_sizes))]
        return (f"^({'|'.join(['conv1', 'bn1', *stages[:split]])})/", f"^({'|'.join(stages[split:])})/",
                "^(fc|head)/")

    @nn.compact
    def __call__(self, x_BxHxWxC, train: bool = True):
        split = self.split()
        if not 0 <= self.frozen_groups <= 2:
            raise InputError(f"ResNet frozen_groups={self.frozen_groups} must be 0, 1 or 2 (the head always trains)")
        # Group g trains (BatchNorm on batch statistics) only when training and g is not frozen.
        group_train = [train and group >= self.frozen_groups for group in range(2)]
        last_stages = (split - 1, len(self.stage_sizes) - 1)
        # the end of a frozen group: nothing before it needs a gradient
        after_stage = lambda x, stage, group: (jax.lax.stop_gradient(x) if stage in last_stages
                                               and group < self.frozen_groups else x)
        _, stages = body(self, x_BxHxWxC, group_train, split, after_stage)
        x = stages[-1]
        if self.head is not None:
            logits = self.head(num_classes=self.num_classes, name="head")(x, train)
        else:
            features_BxD = jnp.mean(x, axis=(1, 2))
            logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(features_BxD)
        return logits.astype(jnp.float32)


def split_stage(stage_sizes: Sequence[int], split: int | None) -> int:
    """The stage that starts the second body group (default: half the stages), checked."""
    split = len(stage_sizes) // 2 if split is None else split
    if not 0 < split < len(stage_sizes):
        raise InputError(f"ResNet group_split={split} must lie in 1..{len(stage_sizes) - 1} "
                         f"for {len(stage_sizes)} stages")
    return split


def body(module: nn.Module, x_BxHxWxC, group_train: Sequence[bool], split: int,
         after_stage: Callable = lambda x, stage, group: x) -> tuple[jax.Array, list[jax.Array]]:
    """The stem and stages of a ResNet-shaped `module` (its fields stem_*, stage_*, block_cls, ...), built in
    the module's own scope with torchvision's names (`conv1`, `bn1`, `layer1_0`, ...), for ResNet and the U-Net's
    encoder alike. Returns the stem's output (after ReLU, before any max-pool) and each stage's output, as
    `after_stage(x, stage, group)` passed it on. Stages from `split` on are group 1; `group_train[g]`: whether
    group g's BatchNorm trains."""
    x = conv(module.stem_width, module.stem_kernel, module.stem_stride, "conv1", module.dtype)(x_BxHxWxC)
    stem = nn.relu(batch_norm(group_train[0], "bn1", module.dtype)(x))
    x = pooling.max_pool(stem, (3, 3), (2, 2), padding=[(1, 1), (1, 1)]) if module.stem_pool else stem
    stages = []
    for stage, (num_blocks, width) in enumerate(zip(module.stage_sizes, module.stage_widths)):
        group = int(stage >= split)
        for block in range(num_blocks):
            stride = module.stage_strides[stage] if block == 0 else 1
            x = module.block_cls(width, stride, module.zero_init_residual, module.dtype,
                                 name=f"layer{stage + 1}_{block}")(x, group_train[group])
        x = after_stage(x, stage, group)
        stages.append(x)
    return stem, stages


def init_head(model: ResNet, rng: jax.Array) -> dict:
    """{"params": ..., "batch_stats": ...} of `model`'s head alone (its `head`, or torchvision's `fc`),
    initialised without the body: a new head for a pretrained body, without paying for the body's init."""
    features = model.stage_widths[-1] * model.block_cls.expansion
    # The head's variables depend on the feature map's channels only, not on its height and width.
    dummy_1x1x1xC = jnp.zeros((1, 1, 1, features), model.dtype)
    if model.head is None:
        fc = nn.Dense(model.num_classes, dtype=model.dtype)
        return {"params": jax.jit(fc.init)(rng, dummy_1x1x1xC[:, 0, 0])["params"], "batch_stats": {}}
    head = model.head(num_classes=model.num_classes)
    variables = jax.jit(functools.partial(head.init, train=False))(rng, dummy_1x1x1xC)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


resnet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
resnet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
resnet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)


def small_resnet(num_classes: int, stage_sizes: Sequence[int] = (1, 1, 1),
                 stage_widths: Sequence[int] = (64, 128, 256), stage_strides: Sequence[int] = (2, 2, 2),
                 stem_width: int = 32, stem_stride: int = 1, zero_init_residual: bool = False,
                 dtype: Any = jnp.float32) -> ResNet:
    """A ResNet for 28-32 px images: a 3x3 stem without max-pool, then BasicBlock stages.

    By default every stage halves the resolution (28 -> 14 -> 7 -> 4): on XLA:CPU the weight gradients of
    narrow convolutions at full resolution are slow (~30 GFLOP/s against ~100 at 7x7x128), and the
    accuracy gained per FLOP is higher from width at low resolution.

    zero_init_residual defaults to False here: in a shallow net trained for a few hundred steps, starting
    each block as the identity slowed early training (loss 1.60 vs 0.92 after 40 Adam steps on 4k images).
    """
    return ResNet(stage_sizes=stage_sizes, block_cls=BasicBlock, num_classes=num_classes,
                  stage_widths=stage_widths, stage_strides=stage_strides, stem_width=stem_width, stem_kernel=3,
                  stem_stride=stem_stride, stem_pool=False, zero_init_residual=zero_init_residual, dtype=dtype)
