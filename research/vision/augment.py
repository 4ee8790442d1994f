"""Image augmentation inside jit: pure functions `(rng, images_BxHxWxC) -> images_BxHxWxC`.

Every example draws its own parameters from `rng`, so the same key gives the same batch and a new key a new
one. They run on normalised float images (after `data.arrays.normalise`) and compose with `compose(...)` into
one `augment_fn` for `data.arrays.image_batches`. Geometric transforms resample bilinearly and fill what falls outside
the image with the nearest edge pixel (Fashion-MNIST's edges are background). Parameters that mean "no
change" (rotation 0, crop scale 1, brightness 0) return the input exactly.

Test-time augmentation: `tta_views(...)` lists deterministic views of a batch; `evaluation.predict_probabilities`
averages the model's probabilities over them and mixes the plain prediction back in (fastai's `beta`).
"""

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from research.core.errors import InputError

AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]  # (rng, images_BxHxWxC) -> images_BxHxWxC


def compose(*augment_fns: AugmentFn) -> AugmentFn:
    """One augment_fn applying `augment_fns` in order, each with its own key split from `rng`."""

    def augment_fn(rng: jax.Array, images_BxHxWxC: jax.Array) -> jax.Array:
        for fn, key in zip(augment_fns, jax.random.split(rng, max(len(augment_fns), 1))):
            images_BxHxWxC = fn(key, images_BxHxWxC)
        return images_BxHxWxC

    return augment_fn


# --- flips and the dihedral group --------------------------------------------------------------------------

def random_flip_left_right(rng: jax.Array, images_BxHxWxC: jax.Array) -> jax.Array:
    """Mirrors each example with probability 1/2 (side-on photos: left-right is the only safe flip)."""
    flip_B = jax.random.bernoulli(rng, 0.5, (images_BxHxWxC.shape[0],))
    return jnp.where(flip_B[:, None, None, None], images_BxHxWxC[:, :, ::-1], images_BxHxWxC)


def dihedral(images_BxHxWxC: jax.Array, k: int) -> jax.Array:
    """Symmetry k (0-7) of the square: k % 4 quarter turns, then a transpose when k >= 4. k = 0 is identity."""
    _check_square(images_BxHxWxC, "dihedral")
    out = jnp.rot90(images_BxHxWxC, k % 4, axes=(1, 2))
    return jnp.swapaxes(out, 1, 2) if k >= 4 else out


def random_dihedral(rng: jax.Array, images_BxHxWxC: jax.Array) -> jax.Array:
    """Each example gets one of the 8 symmetries of the square, uniformly (top-down images: satellite, mosaics)."""
    _check_square(images_BxHxWxC, "random_dihedral")
    k_B = jax.random.randint(rng, (images_BxHxWxC.shape[0],), 0, 8)
    all_8xBxHxWxC = jnp.stack([dihedral(images_BxHxWxC, k) for k in range(8)])
    return jnp.take_along_axis(all_8xBxHxWxC, k_B[None, :, None, None, None], axis=0)[0]


def _check_square(images_BxHxWxC, what: str) -> None:
    if images_BxHxWxC.ndim != 4 or images_BxHxWxC.shape[1] != images_BxHxWxC.shape[2]:
        raise InputError(f"{what} needs square images B x H x H x C, got shape {tuple(images_BxHxWxC.shape)}")


# --- affine warps: crops, zooms, rotations -----------------------------------------------------------------

def affine_warp(images_BxHxWxC: jax.Array, matrix_Bx2x2: jax.Array, offset_Bx2: jax.Array) -> jax.Array:
    """Output pixel (i, j) of example b samples the input at matrix[b] @ (i, j) + offset[b] (row, column
    pixel indices), bilinearly, with edge pixels repeated outside the image."""
    _, height, width, _ = images_BxHxWxC.shape
    rows_HxW, cols_HxW = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                                      jnp.arange(width, dtype=jnp.float32), indexing="ij")
    grid_2xHxW = jnp.stack([rows_HxW, cols_HxW])

    def warp_one(image_HxWxC, matrix_2x2, offset_2):
        coords_2xHxW = jnp.einsum("ij,jhw->ihw", matrix_2x2, grid_2xHxW) + offset_2[:, None, None]
        sample = lambda channel_HxW: jax.scipy.ndimage.map_coordinates(
            channel_HxW, [coords_2xHxW[0], coords_2xHxW[1]], order=1, mode="nearest")
        return jax.vmap(sample, in_axes=2, out_axes=2)(image_HxWxC)

    return jax.vmap(warp_one)(images_BxHxWxC, matrix_Bx2x2, offset_Bx2)


def crop_and_resize(images_BxHxWxC: jax.Array, boxes_Bx4: jax.Array) -> jax.Array:
    """Resamples each box (top, left, height, width, in pixels of the input) to the full HxW."""
    _, height, width, _ = images_BxHxWxC.shape
    top_B, left_B, box_h_B, box_w_B = (boxes_Bx4[:, i] for i in range(4))
    scale_y_B, scale_x_B = box_h_B / height, box_w_B / width
    zeros_B = jnp.zeros_like(scale_y_B)
    matrix_Bx2x2 = jnp.stack([jnp.stack([scale_y_B, zeros_B], -1), jnp.stack([zeros_B, scale_x_B], -1)], -2)
    # Pixel centres: output row i covers [i, i+1) of the output grid, i.e. top + (i + 0.5) * scale - 0.5 of the input.
    offset_Bx2 = jnp.stack([top_B + 0.5 * scale_y_B - 0.5, left_B + 0.5 * scale_x_B - 0.5], -1)
    return affine_warp(images_BxHxWxC, matrix_Bx2x2, offset_Bx2)


def random_resized_crop(rng: jax.Array, images_BxHxWxC: jax.Array, scale: tuple[float, float] = (0.35, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> jax.Array:
    """Crops a box of a random area fraction in `scale` and aspect ratio (width/height) in `ratio` at a random
    place, and resizes it back to HxW. A box larger than the image on one side is clipped to it."""
    batch, height, width, _ = images_BxHxWxC.shape
    area_rng, ratio_rng, place_rng = jax.random.split(rng, 3)
    area_B = jax.random.uniform(area_rng, (batch,), minval=scale[0], maxval=scale[1]) * height * width
    log_ratio_B = jax.random.uniform(ratio_rng, (batch,), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
    box_h_B = jnp.minimum(jnp.sqrt(area_B / jnp.exp(log_ratio_B)), height)
    box_w_B = jnp.minimum(jnp.sqrt(area_B * jnp.exp(log_ratio_B)), width)
    place_Bx2 = jax.random.uniform(place_rng, (batch, 2))
    top_B, left_B = place_Bx2[:, 0] * (height - box_h_B), place_Bx2[:, 1] * (width - box_w_B)
    return crop_and_resize(images_BxHxWxC, jnp.stack([top_B, left_B, box_h_B, box_w_B], -1))


def random_zoom(rng: jax.Array, images_BxHxWxC: jax.Array, max_zoom: float = 1.1) -> jax.Array:
    """Zooms each example in by a factor in [1, max_zoom] at a random centre (fastai's `max_zoom`)."""
    batch, height, width, _ = images_BxHxWxC.shape
    zoom_rng, place_rng = jax.random.split(rng)
    zoom_B = jax.random.uniform(zoom_rng, (batch,), minval=1.0, maxval=max_zoom)
    box_h_B, box_w_B = height / zoom_B, width / zoom_B
    place_Bx2 = jax.random.uniform(place_rng, (batch, 2))
    top_B, left_B = place_Bx2[:, 0] * (height - box_h_B), place_Bx2[:, 1] * (width - box_w_B)
    return crop_and_resize(images_BxHxWxC, jnp.stack([top_B, left_B, box_h_B, box_w_B], -1))


def rotate(images_BxHxWxC: jax.Array, degrees_B: jax.Array) -> jax.Array:
    """Rotates each example about its centre by degrees_B (counter-clockwise as displayed)."""
    _, height, width, _ = images_BxHxWxC.shape
    theta_B = jnp.deg2rad(degrees_B.astype(jnp.float32))
    cos_B, sin_B = jnp.cos(theta_B), jnp.sin(theta_B)
    # Input (row, col) = R (output - centre) + centre, rows pointing down.
    matrix_Bx2x2 = jnp.stack([jnp.stack([cos_B, sin_B], -1), jnp.stack([-sin_B, cos_B], -1)], -2)
    centre_2 = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)
    offset_Bx2 = centre_2 - jnp.einsum("bij,j->bi", matrix_Bx2x2, centre_2)
    return affine_warp(images_BxHxWxC, matrix_Bx2x2, offset_Bx2)


def random_rotation(rng: jax.Array, images_BxHxWxC: jax.Array, max_degrees: float = 10.0) -> jax.Array:
    """Rotates each example by an angle drawn uniformly from [-max_degrees, max_degrees]."""
    degrees_B = jax.random.uniform(rng, (images_BxHxWxC.shape[0],), minval=-max_degrees, maxval=max_degrees)
    return rotate(images_BxHxWxC, degrees_B)


# --- photometric -------------------------------------------------------------------------------------------

def random_brightness_contrast(rng: jax.Array, images_BxHxWxC: jax.Array, brightness: float = 0.1,
                               contrast: float = 0.1) -> jax.Array:
    """Per example: contrast scales about the image's mean by a factor in [1 - contrast, 1 + contrast], then
    brightness adds a shift in [-brightness, brightness] (units of the normalised pixels)."""
    batch = images_BxHxWxC.shape[0]
    b_rng, c_rng = jax.random.split(rng)
    shift_B = jax.random.uniform(b_rng, (batch,), minval=-brightness, maxval=brightness)
    factor_B = jax.random.uniform(c_rng, (batch,), minval=1.0 - contrast, maxval=1.0 + contrast)
    mean_B = jnp.mean(images_BxHxWxC, axis=(1, 2, 3))
    expand = lambda v_B: v_B[:, None, None, None]
    return images_BxHxWxC * expand(factor_B) + expand((1.0 - factor_B) * mean_B + shift_B)


# --- translations and padded crops -------------------------------------------------------------------------

def random_crop_with_padding(rng: jax.Array, images_BxHxWxC: jax.Array, padding: int, pad_mode: str = "constant",
                             probability: float = 1.0) -> jax.Array:
    """Pads each side by `padding` and crops back to HxW at a random offset per example: a random translation
    by up to `padding` pixels, for a share `probability` of the examples (the others stay as they are).

    pad_mode is jnp.pad's: "constant" fills with zeros (the mean pixel, once normalised), "edge" repeats the
    border pixels (black background stays black, so a shifted image looks like a real one)."""
    batch, height, width, channels = images_BxHxWxC.shape
    padded = jnp.pad(images_BxHxWxC, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode=pad_mode)
    # With every image shifted the offsets come from `rng` itself, as in the runs the README reports.
    offset_rng, keep_rng = jax.random.split(rng) if probability < 1.0 else (rng, None)
    offsets_Bx2 = jax.random.randint(offset_rng, (batch, 2), 0, 2 * padding + 1)
    if probability < 1.0:
        shifted_B = jax.random.bernoulli(keep_rng, probability, (batch,))
        offsets_Bx2 = jnp.where(shifted_B[:, None], offsets_Bx2, padding)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    return jax.vmap(crop)(padded, offsets_Bx2)


def shift(images_BxHxWxC: jax.Array, dy: int, dx: int, pad_mode: str = "constant") -> jax.Array:
    """Translates by (dy, dx) pixels, filling as jnp.pad's `pad_mode` does (zeros, or "edge" pixels)."""
    _, height, width, _ = images_BxHxWxC.shape
    pad = max(abs(dy), abs(dx))
    padded = jnp.pad(images_BxHxWxC, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=pad_mode)
    return padded[:, pad - dy:pad - dy + height, pad - dx:pad - dx + width]


def augment(rng: jax.Array, images_BxHxWxC: jax.Array, flip: bool = False, crop_padding: int = 0,
            pad_mode: str = "constant", crop_probability: float = 1.0, max_zoom: float = 1.0,
            max_degrees: float = 0.0, brightness: float = 0.0, contrast: float = 0.0) -> jax.Array:
    """Side-on augmentation from config numbers: left-right flips, padded crops (translations), zoom,
    rotation, lighting. Zero/False leaves a transform out."""
    fns = []
    if flip:
        fns.append(random_flip_left_right)
    if crop_padding:
        fns.append(lambda r, x: random_crop_with_padding(r, x, crop_padding, pad_mode, crop_probability))
    if max_zoom > 1.0:
        fns.append(lambda r, x: random_zoom(r, x, max_zoom))
    if max_degrees:
        fns.append(lambda r, x: random_rotation(r, x, max_degrees))
    if brightness or contrast:
        fns.append(lambda r, x: random_brightness_contrast(r, x, brightness, contrast))
    return compose(*fns)(rng, images_BxHxWxC)


# --- resizing (progressive resizing) -----------------------------------------------------------------------

def resize(images_BxHxWxC: jax.Array, size: int) -> jax.Array:
    """Bilinear resize to size x size (antialiased when shrinking); a no-op at the current size."""
    batch, height, width, channels = images_BxHxWxC.shape
    if (height, width) == (size, size):
        return images_BxHxWxC
    return jax.image.resize(images_BxHxWxC, (batch, size, size, channels), "linear")


# --- test-time views ---------------------------------------------------------------------------------------

def tta_views(images_BxHxWxC: jax.Array, flip: bool = False, shift_pixels: int = 0, zoom: float = 1.0,
              dihedral_group: bool = False, pad_mode: str = "constant") -> list[jax.Array]:
    """Deterministic augmented views for test-time augmentation (the plain image is not among them):
    the mirror image (`flip`), shifts by `shift_pixels` up, down, left and right (filled as `pad_mode`), a
    central zoom by `zoom` and its mirror image, or the 7 non-identity symmetries of the square
    (`dihedral_group`, top-down images)."""
    views = []
    if flip:
        views.append(images_BxHxWxC[:, :, ::-1])
    if shift_pixels:
        views += [shift(images_BxHxWxC, dy, dx, pad_mode) for dy, dx in
                  [(shift_pixels, 0), (-shift_pixels, 0), (0, shift_pixels), (0, -shift_pixels)]]
    if zoom > 1.0:
        batch, height, width, _ = images_BxHxWxC.shape
        box_4 = jnp.array([height * (1 - 1 / zoom) / 2, width * (1 - 1 / zoom) / 2, height / zoom, width / zoom])
        zoomed = crop_and_resize(images_BxHxWxC, jnp.broadcast_to(box_4, (batch, 4)))
        views += [zoomed, zoomed[:, :, ::-1]] if flip else [zoomed]
    if dihedral_group:
        views += [dihedral(images_BxHxWxC, k) for k in range(1, 8)]
    return views


def average_views(probabilities_fn: Callable[[jax.Array], jax.Array], images_BxHxWxC: jax.Array,
                  views: Sequence[jax.Array], beta: float | None = None) -> jax.Array:
    """Mixes the plain prediction with the mean over the augmented views: beta * p(plain) + (1 - beta) *
    mean(p(view)) (fastai's `tta(beta)`); beta None weighs the plain image as one more view (the 2018 course's
    mean over the plain and augmented predictions). Without views, the plain prediction."""
    plain_BxK = probabilities_fn(images_BxHxWxC)
    if not views:
        return plain_BxK
    if beta is None:
        beta = 1.0 / (1 + len(views))
    views_BxK = sum(probabilities_fn(view) for view in views) / len(views)
    return beta * plain_BxK + (1.0 - beta) * views_BxK
