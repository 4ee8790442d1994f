"""Joint augmentation of images and their masks inside jit: a `(rng, batch) -> batch` Transform for
`research.data.arrays.ArrayBatches` over batches {"image": uint8 B x H x W x C, "pixel_labels": B x H x W}.

The geometry (flips, the symmetries of the square, random resized crops, zooms, rotations) is research/augment.py's,
called once on the image with two extra channels holding each pixel's row and column. Bilinear resampling of
those coordinate channels is exact (they are linear in the pixel position; at the edges they are clamped as the
image's pixels are), so after the warp they say where in the input each output pixel was sampled from. The mask
is then read at the nearest of those positions: nearest-neighbour resampling with exactly the image's
geometry, for any composition of the warps. Lighting (brightness, contrast) changes the image only.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections

from research.core.arrays import Transform
from research.core.errors import InputError
from research.vision import augment
from research.vision.image_arrays import normalise


def config(**overrides) -> ml_collections.ConfigDict:
    """`config.augment` of a segmentation experiment; zero/False leaves a transform out."""
    c = ml_collections.ConfigDict(dict(crop_fraction=1.0, flip=False, dihedral=False, crop_scale=1.0, max_zoom=1.0,
                                       max_degrees=0.0, brightness=0.0, contrast=0.0))
    c.update(overrides)
    return c


def geometry_fns(a: ml_collections.ConfigDict) -> list[augment.AugmentFn]:
    """The geometric augmentations `a` asks for, in order: flip or dihedral, resized crop, zoom, rotation."""
    fns = []
    if a.dihedral:
        fns.append(augment.random_dihedral)
    elif a.flip:
        fns.append(augment.random_flip_left_right)
    if a.crop_scale < 1.0:
        fns.append(functools.partial(augment.random_resized_crop, scale=(a.crop_scale, 1.0)))
    if a.max_zoom > 1.0:
        fns.append(functools.partial(augment.random_zoom, max_zoom=a.max_zoom))
    if a.max_degrees:
        fns.append(functools.partial(augment.random_rotation, max_degrees=a.max_degrees))
    return fns


def warp_jointly(geometry: augment.AugmentFn, rng: jax.Array, images_BxHxWxC: jax.Array,
                 masks_BxHxW: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(images, masks) under the same random geometry: bilinear for the images, nearest for the masks."""
    batch, height, width, channels = images_BxHxWxC.shape
    rows_HxW, cols_HxW = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                                      indexing="ij")
    coords_BxHxWx2 = jnp.broadcast_to(jnp.stack([rows_HxW, cols_HxW], -1), (batch, height, width, 2))
    warped = geometry(rng, jnp.concatenate([images_BxHxWxC, coords_BxHxWx2], -1))
    source_rows = jnp.clip(jnp.round(warped[..., channels]), 0, height - 1).astype(jnp.int32)
    source_cols = jnp.clip(jnp.round(warped[..., channels + 1]), 0, width - 1).astype(jnp.int32)
    masks = jax.vmap(lambda mask, r, c: mask[r, c])(masks_BxHxW, source_rows, source_cols)
    return warped[..., :channels], masks


def random_crops(rng: jax.Array, images_BxHxWxC: jax.Array, masks_BxHxW: jax.Array,
                 fraction: float) -> tuple[jax.Array, jax.Array]:
    """A random window of each image, its sides `fraction` of the shorter side, and the same window of its mask
    (no resampling): a fully convolutional model trains on the cheaper crops and is scored on whole images."""
    batch, height, width, channels = images_BxHxWxC.shape
    if not 0 < fraction <= 1:
        raise InputError(f"config.augment.crop_fraction={fraction} must be in (0, 1]")
    size = max(1, round(fraction * min(height, width)))
    top_B, left_B = (jax.random.randint(key, (batch,), 0, limit - size + 1)
                     for key, limit in zip(jax.random.split(rng), (height, width)))
    crop = lambda image, mask, top, left: (jax.lax.dynamic_slice(image, (top, left, 0), (size, size, channels)),
                                           jax.lax.dynamic_slice(mask, (top, left), (size, size)))
    return jax.vmap(crop)(images_BxHxWxC, masks_BxHxW, top_B, left_B)


def transform(mean, std, a: ml_collections.ConfigDict | None = None) -> Transform:
    """Normalises batch["image"] (uint8) with the training statistics, then applies `a`'s geometry to image and
    mask alike and `a`'s lighting to the image; other entries pass unchanged. No `a`: normalisation only."""
    fns = geometry_fns(a) if a is not None else []
    lighting = a is not None and (a.brightness or a.contrast)

    def apply(rng: jax.Array, batch: dict) -> dict:
        images, masks = normalise(batch["image"], mean, std), batch["pixel_labels"]
        geometry_rng, lighting_rng = jax.random.split(rng)
        if a is not None and a.crop_fraction != 1.0:  # its own key: without crops the other draws are unchanged
            images, masks = random_crops(jax.random.fold_in(rng, 2), images, masks, a.crop_fraction)
        if fns:
            images, masks = warp_jointly(augment.compose(*fns), geometry_rng, images, masks)
        if lighting:
            images = augment.random_brightness_contrast(lighting_rng, images, a.brightness, a.contrast)
        return {**batch, "image": images, "pixel_labels": masks}

    return apply
