"""Augmentation inside jit: shapes, determinism under a seed, exact identities, the dihedral group, label
preservation in the batcher, and the arithmetic of test-time augmentation."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.core import sharding
from research.core.errors import InputError
from research.vision import augment
from research.vision.image_arrays import image_batches

RANDOM_AUGMENTATIONS = {
    "flip": augment.random_flip_left_right,
    "dihedral": augment.random_dihedral,
    "resized_crop": augment.random_resized_crop,
    "zoom": functools.partial(augment.random_zoom, max_zoom=1.3),
    "rotation": functools.partial(augment.random_rotation, max_degrees=15.0),
    "brightness_contrast": functools.partial(augment.random_brightness_contrast, brightness=0.2, contrast=0.2),
    "padded_crop": functools.partial(augment.random_crop_with_padding, padding=2),
    "padded_crop_edge_half": functools.partial(augment.random_crop_with_padding, padding=1, pad_mode="edge",
                                               probability=0.5),
    "all": augment.compose(augment.random_dihedral, augment.random_resized_crop, augment.random_rotation,
                           augment.random_brightness_contrast),
}


@pytest.fixture(scope="module")
def batch(fashion_test_split):
    """16 real Fashion-MNIST test images, normalised as training sees them: 16 x 28 x 28 x 1 float32."""
    images_u8, _ = fashion_test_split
    return (jnp.asarray(images_u8[:16], jnp.float32) / 255.0 - 0.286) / 0.353


@pytest.mark.parametrize("name", sorted(RANDOM_AUGMENTATIONS))
def test_shape_dtype_and_seed(batch, name):
    fn = jax.jit(RANDOM_AUGMENTATIONS[name])
    out = fn(jax.random.key(0), batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    np.testing.assert_array_equal(out, fn(jax.random.key(0), batch))  # same seed, same output
    assert not np.array_equal(out, fn(jax.random.key(1), batch))  # another seed, another output
    assert np.isfinite(np.asarray(out)).all()


def test_per_example_randomness(batch):
    """Each example draws its own parameters: the same image repeated comes out in several versions."""
    same_16 = jnp.broadcast_to(batch[:1], batch.shape)
    for name in ("dihedral", "resized_crop", "rotation", "brightness_contrast"):
        out = np.asarray(jax.jit(RANDOM_AUGMENTATIONS[name])(jax.random.key(3), same_16))
        assert len({row.tobytes() for row in out}) > 4, name


def test_identity_parameters_return_the_input_exactly(batch):
    key = jax.random.key(5)
    np.testing.assert_array_equal(augment.rotate(batch, jnp.zeros(16)), batch)
    np.testing.assert_array_equal(augment.random_rotation(key, batch, max_degrees=0.0), batch)
    np.testing.assert_array_equal(augment.random_resized_crop(key, batch, scale=(1.0, 1.0), ratio=(1.0, 1.0)), batch)
    np.testing.assert_array_equal(augment.random_zoom(key, batch, max_zoom=1.0), batch)
    np.testing.assert_array_equal(augment.random_brightness_contrast(key, batch, 0.0, 0.0), batch)
    np.testing.assert_array_equal(augment.dihedral(batch, 0), batch)
    np.testing.assert_array_equal(augment.resize(batch, 28), batch)
    np.testing.assert_array_equal(augment.compose()(key, batch), batch)


def test_warps_agree_with_independent_implementations(batch):
    # A quarter turn by resampling equals numpy's exact rot90 (counter-clockwise as displayed).
    np.testing.assert_allclose(augment.rotate(batch, jnp.full(16, 90.0)), np.rot90(batch, 1, axes=(1, 2)),
                               atol=1e-4)
    # Cropping a box and resizing it equals jax.image.resize of the cropped pixels (away from the box's far
    # edge, where the crop still sees the pixels beyond the box).
    box = jnp.broadcast_to(jnp.array([3.0, 5.0, 14.0, 14.0]), (16, 4))
    expected = jax.image.resize(batch[:, 3:17, 5:19], (16, 28, 28, 1), "linear", antialias=False)
    np.testing.assert_allclose(augment.crop_and_resize(batch, box)[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1],
                               atol=1e-5)
    # Bilinear resampling mixes pixels convexly: no value leaves the image's range.
    out = augment.random_resized_crop(jax.random.key(1), batch)
    assert float(out.min()) >= float(batch.min()) - 1e-5 and float(out.max()) <= float(batch.max()) + 1e-5


def test_padded_crop_shifts_a_share_of_the_images_and_repeats_edges():
    images = jax.random.uniform(jax.random.key(0), (256, 6, 6, 1))
    out = np.asarray(augment.random_crop_with_padding(jax.random.key(1), images, 1, "edge", probability=0.5))
    unchanged = [np.array_equal(o, i) for o, i in zip(out, np.asarray(images))]
    assert 0.45 < np.mean(unchanged) < 0.65  # half left alone, plus the 1/9 of the rest drawn at offset (1, 1)
    # Each output is its input translated by at most one pixel, with the edge repeated into the gap.
    for o, i in zip(out, np.asarray(images)):
        padded = np.pad(i, ((1, 1), (1, 1), (0, 0)), mode="edge")
        assert any(np.array_equal(o, padded[dy:dy + 6, dx:dx + 6]) for dy in range(3) for dx in range(3))


def test_dihedral_group_closure_on_an_asymmetric_image():
    image = jnp.arange(9.0).reshape(1, 3, 3, 1)  # no symmetry: all 8 images differ
    elements = [np.asarray(augment.dihedral(image, k)) for k in range(8)]
    assert len({e.tobytes() for e in elements}) == 8

    def index(x):
        return [k for k, e in enumerate(elements) if np.array_equal(e, np.asarray(x))]

    table = np.zeros((8, 8), int)
    for a, b in itertools.product(range(8), range(8)):
        found = index(augment.dihedral(augment.dihedral(image, a), b))
        assert len(found) == 1, (a, b)  # closed: composing two symmetries gives one of the 8
        table[a, b] = found[0]
    for row in list(table) + list(table.T):
        assert sorted(row) == list(range(8))  # a Latin square: every element has an inverse
    assert not np.array_equal(table, table.T)  # and the group is not commutative (D4)
    # Per example, random_dihedral applies one of the 8 symmetries to each image.
    batch_64 = jnp.broadcast_to(image, (64, 3, 3, 1))
    out = np.asarray(augment.random_dihedral(jax.random.key(0), batch_64))
    ks = [index(row[None])[0] for row in out]
    assert len(set(ks)) == 8


def test_dihedral_needs_square_images():
    with pytest.raises(InputError, match=r"square.*\(2, 4, 6, 1\)"):
        augment.random_dihedral(jax.random.key(0), jnp.zeros((2, 4, 6, 1)))


def test_batcher_keeps_labels_with_augmentation(fashion_test_split):
    images_u8, labels = fashion_test_split
    mesh = sharding.make_mesh()
    augment_fn = functools.partial(augment.augment, flip=True, crop_padding=2, brightness=0.1)
    make = lambda fn: image_batches(images_u8[:512], labels[:512], 64, mesh, seed=1, mean=0.286, std=0.353,
                                     augment_fn=fn)
    plain = make(None)
    augmented = make(augment_fn)
    for step in (0, 3, 9):
        a, b = plain.batch(step), augmented.batch(step)
        np.testing.assert_array_equal(a["label"], b["label"])  # same examples, same labels
        assert not np.array_equal(a["image"], b["image"])  # but transformed images
        assert b["image"].shape == a["image"].shape
    multi_hot = np.eye(10, dtype=np.float32)[labels[:512]]
    augmented_multi = image_batches(images_u8[:512], multi_hot, 64, mesh, seed=1, mean=0.286, std=0.353,
                                     augment_fn=augment_fn)
    np.testing.assert_array_equal(augmented_multi.batch(3)["label"], np.eye(10)[np.asarray(plain.batch(3)["label"])])


def test_tta_views_and_mixing(batch):
    views = augment.tta_views(batch, flip=True, shift_pixels=1, zoom=1.1)
    assert len(views) == 1 + 4 + 2 and all(v.shape == batch.shape for v in views)
    np.testing.assert_array_equal(views[0], batch[:, :, ::-1])
    np.testing.assert_array_equal(views[1][:, 1:], batch[:, :-1])  # shifted down by one row
    assert len(augment.tta_views(batch, dihedral_group=True)) == 7

    # A deterministic "model": probabilities from each image's mean pixel, so views differ.
    probabilities = lambda x: jax.nn.softmax(jnp.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], -1) * 10)
    shifted = augment.tta_views(batch, shift_pixels=2)
    plain, each = probabilities(batch), [probabilities(v) for v in shifted]
    np.testing.assert_allclose(augment.average_views(probabilities, batch, shifted, beta=0.25),
                               0.25 * plain + 0.75 * sum(each) / 4, rtol=1e-6)
    np.testing.assert_allclose(augment.average_views(probabilities, batch, shifted),  # beta None: equal weights
                               (plain + sum(each)) / 5, rtol=1e-6)
    np.testing.assert_array_equal(augment.average_views(probabilities, batch, []), plain)
    assert not np.allclose(each[0], plain)
