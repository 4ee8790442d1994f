"""Fashion-MNIST mosaics: a real multi-label image dataset built offline, as a stand-in for the planet
satellite data of the course's lesson 2.

Each mosaic is a 2x2 grid of 28x28 cells (56x56x1, uint8); each cell holds a real Fashion-MNIST image or is
blank (black), with 1 to 4 items per mosaic, uniformly. The label is multi-hot over the 10 classes (two items
of one class give one label). Mosaics are drawn with a fixed seed, so every build is identical:
  train:      from Fashion-MNIST training images 0..53999
  validation: from Fashion-MNIST training images 54000..59999 (for thresholds and early checks; no image
              is shared with `train`)
  test:       from the 10k Fashion-MNIST test images (held out)
The builder writes PNG-encoded mosaics to ArrayRecord files (no TensorFlow); read them with `load`.
"""

import io

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from research.vision import fashion_mnist

NUM_CLASSES = len(fashion_mnist.CLASS_NAMES)
CELL = 28
SIZE = 2 * CELL
SEEDS = {"train": 0, "validation": 1, "test": 2}


def make_mosaics(images_Nx28x28: np.ndarray, labels_N: np.ndarray, count: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mosaics count x 56 x 56 uint8, multi-hot count x 10 uint8, cell labels count x 4 int8 with -1 for a
    blank cell, in row-major cell order), drawn with numpy's generator from `seed`."""
    rng = np.random.default_rng(seed)
    items_M = rng.integers(1, 5, count)  # how many cells hold an image: 1..4, uniformly
    filled_Mx4 = np.argsort(rng.random((count, 4)), axis=1) < items_M[:, None]  # which cells, at random
    sources_Mx4 = rng.integers(0, len(images_Nx28x28), (count, 4))
    cell_labels_Mx4 = np.where(filled_Mx4, labels_N[sources_Mx4], -1).astype(np.int8)
    cells_Mx4x28x28 = np.where(filled_Mx4[:, :, None, None], images_Nx28x28[sources_Mx4], 0).astype(np.uint8)
    mosaics = cells_Mx4x28x28.reshape(count, 2, 2, CELL, CELL).transpose(0, 1, 3, 2, 4).reshape(count, SIZE, SIZE)
    multi_hot_MxK = np.zeros((count, NUM_CLASSES), np.uint8)
    rows, cells = np.nonzero(filled_Mx4)
    multi_hot_MxK[rows, cell_labels_Mx4[rows, cells]] = 1
    return mosaics, multi_hot_MxK, cell_labels_Mx4


class FashionMosaics(tfds.core.GeneratorBasedBuilder):
    """2x2 mosaics of real Fashion-MNIST images with multi-hot labels (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        fashion_mnist.DerivedSizes(name="default", description="40k train, 5k validation, 10k test mosaics",
                                   train=40_000, validation=5_000, test=10_000),
        fashion_mnist.DerivedSizes(name="small", train=2_000, validation=500, test=500,
                                   description="2k train, 500 validation, 500 test mosaics (quick runs, tests)"),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="2x2 mosaics of Fashion-MNIST images (1-4 items each) with multi-hot labels.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(SIZE, SIZE, 1)),
                "labels": tfds.features.Tensor(shape=(NUM_CLASSES,), dtype=np.uint8),
                "cell_labels": tfds.features.Tensor(shape=(4,), dtype=np.int8),
            }),
            supervised_keys=("image", "labels"),
            disable_shuffling=True,  # records in generation order, so `load` returns `make_mosaics`'s order
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager):
        return fashion_mnist.derived_split_generators(self._generate_examples, self.builder_config,
                                                      dl_manager.download_dir, SEEDS)

    def _generate_examples(self, images, labels, count, seed):
        mosaics, multi_hot, cell_labels = make_mosaics(images, labels, count, seed)
        for i in range(count):
            png = io.BytesIO()
            PIL.Image.fromarray(mosaics[i]).save(png, format="PNG")
            yield i, {"image": png.getvalue(), "labels": multi_hot[i], "cell_labels": cell_labels[i]}


def load(split: str, data_dir: str | None = None, config: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """Builds the ArrayRecord dataset if needed; returns (images N x 56 x 56 x 1 uint8, labels N x 10 float32)."""
    builder = FashionMosaics(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    images, labels = fashion_mnist.read_all(builder.as_data_source(split=split), label_key="labels")
    return images, labels.astype(np.float32)
