"""Fashion-MNIST (Zalando, MIT licence) as a TFDS dataset stored in ArrayRecord files (no TensorFlow needed).

The raw idx files come from, in order:
  1. a local directory (`FASHION_MNIST_DIR`, by default Debian's `dataset-fashion-mnist` package at
     /usr/share/datasets/fashion-mnist), or
  2. the canonical download URLs.
Each file's *decompressed* content is checked against a SHA-256, so the original gzip files and Debian's
recompressed ones both verify. The TFDS builder writes PNG-encoded images to ArrayRecord once; later runs
read them back through `tfds.data_source`.
"""

import dataclasses
import gzip
import hashlib
import io
import os
import urllib.request

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
URL_ROOT = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# SHA-256 of each file's decompressed bytes.
RAW_FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def _read_verified(path: str, sha256: str) -> bytes:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise ValueError(f"{path}: checksum mismatch (corrupt or not the Fashion-MNIST file)")
    return raw


def local_dir() -> str:
    """Where the idx files are looked for first: $FASHION_MNIST_DIR, else Debian's package directory."""
    return os.environ.get("FASHION_MNIST_DIR") or DEBIAN_DIR


def missing_local_files() -> list[str]:
    """The raw files absent from `local_dir()` (an empty list: no download is needed)."""
    return [name for name in RAW_FILES if not os.path.exists(os.path.join(local_dir(), name))]


# The datasets built from Fashion-MNIST's images (mosaics, canvases) make their validation examples from the
# training images from here on, and their test examples from the test images only.
DERIVED_VALIDATION_START = 54_000


@dataclasses.dataclass
class DerivedSizes(tfds.core.BuilderConfig):
    """A derived dataset's configuration: how many examples each split holds."""
    train: int = 0
    validation: int = 0
    test: int = 0


def derived_split_generators(generate, sizes: DerivedSizes, download_dir: str, seeds: dict[str, int]) -> dict:
    """`_split_generators` of a derived dataset: split -> `generate(images, labels, count, seed)` over that
    split's source images (training images before / from DERIVED_VALIDATION_START, test images), with the
    split's count from `sizes` and its seed from `seeds`."""
    arrays = raw_arrays(download_dir)
    train_images, train_labels = arrays["train"]
    start = DERIVED_VALIDATION_START
    sources = {"train": (train_images[:start], train_labels[:start]),
               "validation": (train_images[start:], train_labels[start:]), "test": arrays["test"]}
    return {split: generate(*sources[split], getattr(sizes, split), seeds[split])
            for split in ("train", "validation", "test")}


def raw_arrays(download_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images_Nx28x28 uint8, labels_N uint8), 'test': ...} from the local copy or the URLs."""
    directory = local_dir()
    contents = {}
    for name, sha256 in RAW_FILES.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            path = os.path.join(download_dir, name)
            if not os.path.exists(path):
                os.makedirs(download_dir, exist_ok=True)
                try:
                    urllib.request.urlretrieve(URL_ROOT + name, path + ".part")
                except OSError as e:
                    raise FileNotFoundError(
                        f"Fashion-MNIST file {name} is not in {directory} (install Debian's "
                        f"dataset-fashion-mnist or set FASHION_MNIST_DIR) and downloading {URL_ROOT + name} "
                        f"failed: {e}") from None
                os.replace(path + ".part", path)
        contents[name] = _read_verified(path, sha256)

    def images(name):
        return np.frombuffer(contents[name], np.uint8, offset=16).reshape(-1, 28, 28)

    def labels(name):
        return np.frombuffer(contents[name], np.uint8, offset=8)

    return {"train": (images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")),
            "test": (images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"))}


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST built from the original idx files: 60k train, 10k test, 28x28x1 uint8, 10 classes."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Fashion-MNIST: Zalando article images, 10 classes.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager):
        arrays = raw_arrays(dl_manager.download_dir)
        return {split: self._generate_examples(*arrays[split]) for split in ("train", "test")}

    def _generate_examples(self, images, labels):
        for i, (image, label) in enumerate(zip(images, labels)):
            png = io.BytesIO()
            PIL.Image.fromarray(image).save(png, format="PNG")
            yield i, {"image": png.getvalue(), "label": int(label)}


def load(split: str, data_dir: str | None = None, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Builds the ArrayRecord dataset if needed; returns (images_NxHxWx1 uint8, labels_N int32), the first
    `limit` examples only if given (decoding all 60k PNGs takes seconds)."""
    builder = FashionMnistIdx(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return read_all(builder.as_data_source(split=split), limit=limit)


def read_all(source, chunk: int = 5000, limit: int | None = None,
             label_key: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """Reads every record (or the first `limit`) of a TFDS data source into two numpy arrays: the images and
    the int32 `label_key` feature (one per record, or one row per record for multi-hot labels)."""
    images, labels = [], []
    size = min(len(source), limit) if limit else len(source)
    for start in range(0, size, chunk):
        records = source.__getitems__(list(range(start, min(start + chunk, size))))
        images.extend(r["image"] for r in records)
        labels.extend(r[label_key] for r in records)
    return np.stack(images), np.asarray(labels, np.int32)
