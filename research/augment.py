"""Per-example image augmentation inside jit, seeded by a JAX key (same key, same batch)."""

import jax
import jax.numpy as jnp


def random_flip_left_right(rng: jax.Array, images_BxHxWxC: jax.Array) -> jax.Array:
    flip_B = jax.random.bernoulli(rng, 0.5, (images_BxHxWxC.shape[0],))
    return jnp.where(flip_B[:, None, None, None], images_BxHxWxC[:, :, ::-1], images_BxHxWxC)


def random_crop_with_padding(rng: jax.Array, images_BxHxWxC: jax.Array, padding: int) -> jax.Array:
    """Zero-pads each side by `padding` and crops back to HxW at a random offset per example."""
    batch, height, width, channels = images_BxHxWxC.shape
    padded = jnp.pad(images_BxHxWxC, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets_Bx2 = jax.random.randint(rng, (batch, 2), 0, 2 * padding + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    return jax.vmap(crop)(padded, offsets_Bx2)


def augment(rng: jax.Array, images_BxHxWxC: jax.Array, flip: bool, crop_padding: int) -> jax.Array:
    flip_rng, crop_rng = jax.random.split(rng)
    if flip:
        images_BxHxWxC = random_flip_left_right(flip_rng, images_BxHxWxC)
    if crop_padding:
        images_BxHxWxC = random_crop_with_padding(crop_rng, images_BxHxWxC, crop_padding)
    return images_BxHxWxC


def shift(images_BxHxWxC: jax.Array, dy: int, dx: int) -> jax.Array:
    """Translates by (dy, dx) pixels, filling with zeros (the normalised images' padding is zeros too)."""
    _, height, width, _ = images_BxHxWxC.shape
    pad = max(abs(dy), abs(dx))
    padded = jnp.pad(images_BxHxWxC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return padded[:, pad - dy:pad - dy + height, pad - dx:pad - dx + width]


def tta_views(images_BxHxWxC: jax.Array, flip: bool, shift_pixels: int) -> list[jax.Array]:
    """Test-time views matching the training augmentation: the original, its mirror image (if trained with
    flips) and shifts by `shift_pixels` up, down, left and right (if trained with padded crops)."""
    views = [images_BxHxWxC]
    if flip:
        views.append(images_BxHxWxC[:, :, ::-1])
    if shift_pixels:
        views += [shift(images_BxHxWxC, dy, dx) for dy, dx in
                  [(shift_pixels, 0), (-shift_pixels, 0), (0, shift_pixels), (0, -shift_pixels)]]
    return views
