"""Fashion-MNIST through TFDS (ArrayRecord, no TensorFlow), the in-memory batcher and augmentation."""

import functools
import gzip
import os
import shutil

import jax
import numpy as np
import pytest

from research.core import sharding
from research.core.arrays import padded_batches
from research.vision import augment, fashion_mnist
from research.vision.image_arrays import image_batches


def test_real_test_split_through_tfds_data_source(fashion_test_split):
    images, labels = fashion_test_split
    assert images.shape == (10_000, 28, 28, 1) and images.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(10))
    assert np.bincount(labels).tolist() == [1000] * 10  # the real test set is balanced
    assert 0.27 < images.mean() / 255 < 0.30


def test_corrupt_raw_file_is_named_in_the_error(tmp_path, monkeypatch):
    for name in fashion_mnist.RAW_FILES:
        shutil.copy(os.path.join(fashion_mnist.DEBIAN_DIR, name), tmp_path / name)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"not fashion mnist")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        fashion_mnist.raw_arrays(str(tmp_path / "downloads"))


def test_batches_are_a_pure_function_of_the_step(fashion_test_split):
    images, labels = fashion_test_split
    mesh = sharding.make_mesh()
    make = lambda: image_batches(images[:1000], labels[:1000], 100, mesh, seed=3, mean=0.3, std=0.35,
                                  augment_fn=functools.partial(augment.augment, flip=True, crop_padding=2))
    a, b = make(), make()
    # Steps across epochs of 10 steps, asked for in a different order from `b`.
    batch_a = [a.batch(s) for s in (0, 7, 12, 25)]
    batch_b = [b.batch(s) for s in (25, 12, 7, 0)][::-1]
    for x, y in zip(batch_a, batch_b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    # One epoch visits every example once.
    epoch_labels = np.concatenate([np.asarray(a.batch(s)["label"]) for s in range(10)])
    np.testing.assert_array_equal(np.sort(epoch_labels), np.sort(labels[:1000]))
    assert a.batch(0)["image"].shape == (100, 28, 28, 1)


def test_augmentation_shapes_determinism_and_content():
    images = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
    flipped = augment.random_flip_left_right(jax.random.key(1), images)
    for original, out in zip(np.asarray(images), np.asarray(flipped)):
        assert np.array_equal(out, original) or np.array_equal(out, original[:, ::-1])
    cropped = augment.random_crop_with_padding(jax.random.key(2), images, 4)
    assert cropped.shape == images.shape
    np.testing.assert_array_equal(cropped, augment.random_crop_with_padding(jax.random.key(2), images, 4))
    # A crop is a shifted window: the pixel sum cannot grow.
    assert np.all(np.asarray(cropped).sum((1, 2, 3)) <= np.asarray(images).sum((1, 2, 3)) + 1e-4)


def test_padded_eval_batches_mask_every_example_once():
    images, labels = np.zeros((25, 2, 2, 1), np.uint8), np.arange(25)
    batches = list(padded_batches({"image": images, "label": labels}, 10))
    assert [b["image"].shape[0] for b in batches] == [10, 10, 10]
    assert sum(int(b["mask"].sum()) for b in batches) == 25
    np.testing.assert_array_equal(np.concatenate([b["label"][b["mask"]] for b in batches]), labels)


def test_padded_batches_pad_only_the_batch_axis_of_multi_hot_labels():
    labels_Nx3 = np.arange(15, dtype=np.float32).reshape(5, 3)
    batches = list(padded_batches({"image": np.ones((5, 2, 2, 1), np.uint8), "label": labels_Nx3}, 4))
    assert [b["label"].shape for b in batches] == [(4, 3), (4, 3)]
    np.testing.assert_array_equal(batches[1]["label"][0], labels_Nx3[4])
    np.testing.assert_array_equal(batches[1]["label"][1:], 0)
    assert batches[1]["mask"].tolist() == [True, False, False, False]
