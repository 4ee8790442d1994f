"""The image models' one registry: torchvision's ResNets by name, and the small ResNet for 28-32 px images built
from a `config.model` block (stage_sizes, stage_widths, stage_strides, stem_width, stem_stride)."""

import functools

import jax.numpy as jnp
import ml_collections

from research.core.errors import InputError
from research.vision import resnet
from research.vision.head import FastaiHead

IMAGENET_RESNETS = {"resnet18": resnet.resnet18, "resnet34": resnet.resnet34, "resnet50": resnet.resnet50}
NAMES = ("small_resnet",) + tuple(IMAGENET_RESNETS)


def small_resnet(m: ml_collections.ConfigDict, num_classes: int, dtype=jnp.float32) -> resnet.ResNet:
    """`resnet.small_resnet` with the sizes of the config block `m`."""
    return resnet.small_resnet(num_classes=num_classes, stage_sizes=tuple(m.stage_sizes),
                               stage_widths=tuple(m.stage_widths), stage_strides=tuple(m.stage_strides),
                               stem_width=m.stem_width, stem_stride=m.stem_stride, dtype=dtype)


def imagenet_resnet(arch: str, num_classes: int, key: str = "arch", **overrides) -> resnet.ResNet:
    """ResNet-18/34/50 by name (torchvision's layout, so pretrained weights load); `key` names the config key in
    the error for an unknown name."""
    if arch not in IMAGENET_RESNETS:
        raise InputError(f"config.{key}={arch!r} is not one of {', '.join(IMAGENET_RESNETS)}")
    return IMAGENET_RESNETS[arch](num_classes=num_classes, **overrides)


def by_name(m: ml_collections.ConfigDict, num_classes: int) -> resnet.ResNet:
    """`m.arch`: small_resnet (sized by `m`) or one of the ImageNet ResNets."""
    if m.arch == "small_resnet":
        return small_resnet(m, num_classes)
    if m.arch not in IMAGENET_RESNETS:
        raise InputError(f"config.model.arch={m.arch!r} is not one of {', '.join(NAMES)}")
    return imagenet_resnet(m.arch, num_classes, key="model.arch")


def fastai_head(h: ml_collections.ConfigDict):
    """fastai's head (concat pool, BatchNorm, dropout, hidden Dense layers) from a `config.head` block."""
    return functools.partial(FastaiHead, hidden=tuple(h.hidden), dropout=h.dropout)
