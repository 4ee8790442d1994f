"""Image datasets as device-resident arrays: uint8 images normalised (and augmented) inside jit."""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from research.core.arrays import ArrayBatches, Transform

AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]  # (rng, images_BxHxWxC) -> images_BxHxWxC


def normalise(images_uint8, mean, std) -> jax.Array:
    return (images_uint8.astype(jnp.float32) / 255.0 - mean) / std


def image_transform(mean, std, augment_fn: AugmentFn | None = None, key: str = "image") -> Transform:
    """Normalises `batch[key]` (uint8) with the training statistics, then augments it with `augment_fn`; every
    other entry passes unchanged. For joint image/mask geometry write a `Transform` over the whole batch."""

    def transform(rng: jax.Array, batch: dict) -> dict:
        images = normalise(batch[key], mean, std)
        if augment_fn is not None:
            images = augment_fn(rng, images)
        return {**batch, key: images}

    return transform


def image_batches(images_NxHxWxC: np.ndarray, labels_N: np.ndarray, batch_size: int, mesh: Mesh, seed: int,
                  mean, std, augment_fn: AugmentFn | None = None) -> ArrayBatches:
    """Batches {"image": float32 BxHxWxC normalised and augmented, "label": B int32 or BxK float32}."""
    return ArrayBatches({"image": images_NxHxWxC, "label": labels_N}, batch_size, mesh, seed,
                        image_transform(mean, std, augment_fn))


def image_prepare(mean, std, key: str = "image") -> Callable[[dict], dict]:
    """The evaluation-time transform of an image batch: normalisation only."""
    return lambda batch: {**batch, key: normalise(batch[key], mean, std)}
