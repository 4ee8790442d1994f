"""An image experiment's data from its config: Fashion-MNIST, or the user's own images (a folder per class, a
CSV, a TFDS catalog name), split into train / validation / test.

Validation is what every choice is made on (the best checkpoint, thresholds, baselines' rates); the test split
is scored once, at the end. Where the data has no validation split of its own, a fixed random `valid_fraction`
of the training images is held out (the same images for every seed, so runs with different seeds compare).
"""

import os
from typing import NamedTuple

import ml_collections
import numpy as np

from research.core.errors import InputError
from research.vision import fashion_mnist, images
from research.vision.images import ImageSet

# Fashion-MNIST's pixel statistics over its 60k training images (in [0, 1]).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
VALID_SPLIT_SEED = 42


class ImageData(NamedTuple):
    train: ImageSet
    valid: ImageSet
    test: ImageSet | None  # None when the user's data has no test split
    class_names: tuple[str, ...]
    mean: float | np.ndarray  # of the training pixels in [0, 1]: a scalar, or one per channel
    std: float | np.ndarray


def data_config(**overrides) -> ml_collections.ConfigDict:
    """The `config.data` keys of the image experiments.

    source: "fashion_mnist"; "folder" reads path/train/<class>/*, path/valid/<class>/* (else valid_fraction of
      train) and path/test/<class>/* if present; "csv" reads path/csv_file (file names relative to path, plus
      csv_suffix; csv_label_delimiter=" " for multi-label tags), with csv_valid_file / csv_test_file if given;
      "tfds" reads the TFDS catalog dataset tfds_name (train_split, valid_split or else valid_fraction of
      train_split, test_split) from config.data_dir. Own images are resized to image_size on load; classes,
      channels and the normalisation statistics come from the training images.
    train_examples / test_examples: > 0 keeps the first N (quick runs, tests).
    """
    c = ml_collections.ConfigDict(dict(
        source="fashion_mnist", path="", image_size=28, valid_fraction=0.1, csv_file="labels.csv",
        csv_valid_file="", csv_test_file="", csv_file_column="file", csv_label_column="label",
        csv_label_delimiter="", csv_suffix="", tfds_name="", train_split="train", valid_split="",
        test_split="test", train_examples=0, test_examples=0))
    c.update(overrides)
    return c


def load_image_data(d: ml_collections.ConfigDict, data_dir: str = "") -> ImageData:
    """The images `d` (a `data_config`) names, split into train / valid / test."""
    if data_dir and not os.path.isdir(data_dir):
        raise InputError(f"config.data_dir={data_dir} does not exist (the TFDS data directory)")
    if d.source == "fashion_mnist":
        if d.image_size != 28:
            raise InputError(f"config.data.image_size={d.image_size}: Fashion-MNIST is 28 px (image_size resizes "
                             "the folder, csv and tfds sources)")
        names = fashion_mnist.CLASS_NAMES
        train = _as_set(fashion_mnist.load("train", data_dir or None, d.train_examples or None), names, "train")
        test = _as_set(fashion_mnist.load("test", data_dir or None, d.test_examples or None), names, "test")
        train, valid = hold_out(train, d.valid_fraction)
        return ImageData(train, valid, test, names, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    if d.source == "folder":
        train, valid, test = _folder_splits(d)
    elif d.source == "csv":
        train, valid, test = _csv_splits(d)
    elif d.source == "tfds":
        train, valid, test = _tfds_splits(d, data_dir)
    else:
        raise InputError(f"config.data.source={d.source!r} is not one of fashion_mnist, folder, csv, tfds")
    train = _first(train, d.train_examples)
    if valid is None:
        train, valid = hold_out(train, d.valid_fraction)
    if test is not None:
        test = _first(test, d.test_examples)
    mean, std = images.channel_mean_std(train.images)
    return ImageData(train, valid, test, train.class_names, mean, std)


def hold_out(train: ImageSet, fraction: float) -> tuple[ImageSet, ImageSet]:
    """(the rest, a random `fraction` of the rows), the same rows for every run (a fixed seed)."""
    if not 0 < fraction < 1:
        raise InputError(f"config.data.valid_fraction={fraction} must lie strictly between 0 and 1")
    order = np.random.default_rng(VALID_SPLIT_SEED).permutation(len(train.labels))
    num_valid = int(round(fraction * len(order)))
    if num_valid == 0 or num_valid == len(order):
        raise InputError(f"config.data.valid_fraction={fraction} of {len(order)} images leaves an empty split")
    return _rows(train, np.sort(order[num_valid:])), _rows(train, np.sort(order[:num_valid]))


def _rows(s: ImageSet, rows: np.ndarray) -> ImageSet:
    return ImageSet(s.images[rows], s.labels[rows], s.class_names, tuple(s.sources[i] for i in rows))


def _first(s: ImageSet, n: int) -> ImageSet:
    return _rows(s, np.arange(min(n, len(s.labels)))) if n else s


def _as_set(arrays, class_names, split: str) -> ImageSet:
    images_N, labels_N = arrays
    return ImageSet(images_N, labels_N, tuple(class_names),
                    tuple(f"fashion_mnist/{split}[{i}]" for i in range(len(labels_N))))


def _folder_splits(d):
    train = images.load_image_folder(d.path, "train", d.image_size)
    like = dict(class_names=train.class_names, channels=train.images.shape[-1])
    optional = lambda split: (images.load_image_folder(d.path, split, d.image_size, **like)
                              if os.path.isdir(os.path.join(d.path, split)) else None)
    return train, optional("valid"), optional("test")


def _csv_splits(d):
    if not d.path:
        raise InputError("config.data.source='csv' needs config.data.path (the folder of the images)")
    columns = dict(file_column=d.csv_file_column, label_column=d.csv_label_column, suffix=d.csv_suffix,
                   label_delimiter=d.csv_label_delimiter or None)
    train = images.load_image_csv(os.path.join(d.path, d.csv_file), d.path, d.image_size, **columns)
    like = dict(class_names=train.class_names, channels=train.images.shape[-1], **columns)
    optional = lambda name: (images.load_image_csv(os.path.join(d.path, name), d.path, d.image_size, **like)
                             if name else None)
    return train, optional(d.csv_valid_file), optional(d.csv_test_file)


def _tfds_splits(d, data_dir):
    if not d.tfds_name:
        raise InputError("config.data.source='tfds' needs config.data.tfds_name (e.g. oxford_iiit_pet)")
    load = lambda split, channels=None: images.load_tfds_images(d.tfds_name, split, d.image_size, data_dir or None,
                                                                channels=channels)
    train = load(d.train_split)
    channels = train.images.shape[-1]
    return (train, load(d.valid_split, channels) if d.valid_split else None,
            load(d.test_split, channels) if d.test_split else None)
