"""Fashion-MNIST canvases: a real segmentation dataset built offline, as a stand-in for CamVid / Carvana.

Each canvas is 64x64x1 (uint8, black background) holding 1 to 4 real Fashion-MNIST items (uniformly), each
resized (bilinear) to a random square side in [24, 40] px and placed at a random position inside the canvas;
later items cover earlier ones where they overlap. The mask (64x64, uint8) labels each pixel with its item's
class + 1 (1..10) or 0 for background.

Overlap is bounded so that the masks stay readable from the pixels: a position is kept only if every item
already on the canvas keeps at least MIN_VISIBLE of its pixels uncovered, else another is drawn (up to
PLACEMENT_TRIES, after which the item is left out). Garments of the same grey meet without a visible edge, so
an item mostly hidden under another cannot be told apart from it: without the bound (version 1), a fifth of
the items showed less than half of themselves and a tenth less than a third.

An item's pixels are those of its resized image at or above 16 (of 255), with the holes inside filled
(`scipy.ndimage.binary_fill_holes`: dark patches inside a garment belong to it). Only those pixels are pasted,
so every non-zero pixel of a canvas belongs to the item its mask names, and the faint halo below the threshold
stays black background.

Canvases are drawn with a fixed seed per split, so every build is identical:
  train:      from Fashion-MNIST training images 0..53999
  validation: from Fashion-MNIST training images 54000..59999 (no item is shared with `train`)
  test:       from the 10k Fashion-MNIST test images (held out)
The builder writes PNG-encoded canvases and masks to ArrayRecord files (no TensorFlow); read them with `load`.
"""

import io

import numpy as np
import PIL.Image
import scipy.ndimage
import tensorflow_datasets as tfds

from research.vision import fashion_mnist

SIZE = 64
MIN_SIDE, MAX_SIDE = 24, 40
MAX_ITEMS = 4
THRESHOLD = 16
MIN_VISIBLE = 0.7
PLACEMENT_TRIES = 20
CLASS_NAMES = ("background", *fashion_mnist.CLASS_NAMES)  # mask value k: background (0), item class k - 1
SEEDS = {"train": 10, "validation": 11, "test": 12}


def item_and_mask(image_28x28: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(the item resized to side x side, uint8; its pixels, bool): resized >= THRESHOLD, holes filled."""
    resized = np.asarray(PIL.Image.fromarray(image_28x28).resize((side, side), PIL.Image.Resampling.BILINEAR))
    return resized, scipy.ndimage.binary_fill_holes(resized >= THRESHOLD)


def draw_canvas(rng: np.random.Generator, images_Nx28x28: np.ndarray, labels_N: np.ndarray):
    """One canvas: (canvas 64 x 64 uint8, mask 64 x 64 uint8, owner 64 x 64 int: the index of the placed item
    each pixel shows or -1, the placed items' pixel counts)."""
    canvas, mask = np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8)
    owner_HxW = np.full((SIZE, SIZE), -1)
    item_sizes = []
    for _ in range(rng.integers(1, MAX_ITEMS + 1)):
        source = rng.integers(len(images_Nx28x28))
        side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
        item, pixels = item_and_mask(images_Nx28x28[source], side)
        shown = np.bincount(owner_HxW.ravel() + 1, minlength=len(item_sizes) + 1)[1:]
        spare = shown - MIN_VISIBLE * np.asarray(item_sizes, dtype=float)  # pixels each placed item may lose
        for _ in range(PLACEMENT_TRIES):
            top, left = rng.integers(0, SIZE - side + 1, 2)
            window = np.s_[top:top + side, left:left + side]
            covered = np.bincount(owner_HxW[window][pixels] + 1, minlength=len(item_sizes) + 1)[1:]
            if np.all(covered <= spare):
                break
        else:
            continue  # no position leaves the others visible enough: the item is left out
        owner_HxW[window] = np.where(pixels, len(item_sizes), owner_HxW[window])
        item_sizes.append(int(pixels.sum()))
        canvas[window] = np.where(pixels, item, canvas[window])
        mask[window] = np.where(pixels, labels_N[source] + 1, mask[window])
    return canvas, mask, owner_HxW, item_sizes


def make_canvases(images_Nx28x28: np.ndarray, labels_N: np.ndarray, count: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(canvases count x 64 x 64 uint8, masks count x 64 x 64 uint8 in 0..10), drawn from `seed`."""
    rng = np.random.default_rng(seed)
    drawn = [draw_canvas(rng, images_Nx28x28, labels_N)[:2] for _ in range(count)]
    return np.stack([canvas for canvas, _ in drawn]), np.stack([mask for _, mask in drawn])


class FashionCanvases(tfds.core.GeneratorBasedBuilder):
    """64x64 canvases of 1-4 real Fashion-MNIST items with per-pixel class masks (see the module docstring)."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"2.0.0": "Overlap bounded: every item keeps MIN_VISIBLE of its pixels.",
                     "1.0.0": "Unbounded overlap."}
    BUILDER_CONFIGS = [
        fashion_mnist.DerivedSizes(name="default", description="12k train, 1k validation, 2k test canvases",
                                   train=12_000, validation=1_000, test=2_000),
        fashion_mnist.DerivedSizes(name="small", description="600 train, 100 validation, 100 test canvases (tests)",
                                   train=600, validation=100, test=100),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="64x64 canvases of 1-4 Fashion-MNIST items; masks: 0 background, 1..10 item class + 1.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(SIZE, SIZE, 1)),
                "mask": tfds.features.Image(shape=(SIZE, SIZE, 1)),
            }),
            supervised_keys=("image", "mask"),
            disable_shuffling=True,  # records in generation order, so `load` returns `make_canvases`'s order
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager):
        return fashion_mnist.derived_split_generators(self._generate_examples, self.builder_config,
                                                      dl_manager.download_dir, SEEDS)

    def _generate_examples(self, images, labels, count, seed):
        canvases, masks = make_canvases(images, labels, count, seed)
        for i in range(count):
            yield i, {"image": _png(canvases[i]), "mask": _png(masks[i])}


def _png(array_HxW: np.ndarray) -> bytes:
    png = io.BytesIO()
    PIL.Image.fromarray(array_HxW).save(png, format="PNG")
    return png.getvalue()


def load(split: str, data_dir: str | None = None, config: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """Builds the ArrayRecord dataset if needed; returns (images N x 64 x 64 x 1 uint8, masks N x 64 x 64 uint8)."""
    builder = FashionCanvases(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    source = builder.as_data_source(split=split)
    records = source.__getitems__(list(range(len(source))))
    return (np.stack([r["image"] for r in records]).astype(np.uint8),
            np.stack([r["mask"][..., 0] for r in records]).astype(np.uint8))
