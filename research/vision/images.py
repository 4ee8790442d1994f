"""The user's own images: a folder per class, a CSV of file names and labels, or a TFDS catalog dataset.

Every loader returns an `ImageSet`: uint8 NxSxSxC images, labels (int32 class indices, or float32 NxK
multi-hot for multi-label CSVs), the class names and where each image came from. Images are decoded with
PIL and resized on load as fastai's validation transform does: the shorter side is scaled to S, then the
centre SxS is cut out. Grayscale files give 1 channel; if any file of a set is in colour, the whole set is
RGB (pass `channels` to force one, e.g. the training set's for the validation set).

Bad input raises `InputError` with one line naming the problem: the missing folder, the unreadable file,
the missing column, the label that is not one of the classes.
"""

import concurrent.futures
import csv
import os
from typing import NamedTuple, Sequence

import numpy as np
import PIL.Image
import PIL.ImageOps

from research.core.errors import InputError

# Extensions PIL can open (png, jpg/jpeg, gif, bmp, tif/tiff, webp, ppm, ...); other files are not images.
IMAGE_EXTENSIONS = frozenset(ext for ext, fmt in PIL.Image.registered_extensions().items()
                             if fmt in PIL.Image.OPEN)
_GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


class ImageSet(NamedTuple):
    images: np.ndarray  # uint8 NxSxSxC
    labels: np.ndarray  # int32 N, or float32 NxK multi-hot
    class_names: tuple[str, ...]
    sources: tuple[str, ...]  # file path (folder, CSV) or "dataset/split[index]" (TFDS) of each image


def load_image_folder(root: str, split: str, size: int, class_names: Sequence[str] | None = None,
                      channels: int | None = None) -> ImageSet:
    """Images in `root/split/<class>/*` (fastai's from_paths layout: train/<class>/*, valid/<class>/*).

    Classes are the sorted sub-folder names, or `class_names` (the training set's, when loading `valid`):
    then a sub-folder that is not one of them is an error."""
    split_dir = os.path.join(root, split)
    if not os.path.isdir(root):
        raise InputError(f"data directory not found: {root}")
    if not os.path.isdir(split_dir):
        raise InputError(f"no {split!r} folder in the data directory {root} (expected {split_dir}/<class>/<images>)")
    found = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d))
                   and not d.startswith("."))
    if not found:
        raise InputError(f"no class folders in {split_dir} (expected {split_dir}/<class>/<images>)")
    if class_names is None:
        class_names = found
    for name in found:
        if name not in class_names:
            raise InputError(f"class folder {os.path.join(split_dir, name)} is not one of the {len(class_names)} "
                             f"training classes ({_preview(class_names)})")
    paths, labels = [], []
    for name in found:
        class_dir = os.path.join(split_dir, name)
        files = sorted(f for f in os.listdir(class_dir) if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
        if not files:
            raise InputError(f"no image files in {class_dir}")
        paths += [os.path.join(class_dir, f) for f in files]
        labels += [class_names.index(name)] * len(files)
    return ImageSet(decode_files(paths, size, channels), np.asarray(labels, np.int32), tuple(class_names),
                    tuple(paths))


def load_image_csv(csv_path: str, image_dir: str, size: int, file_column: str = "file",
                   label_column: str = "label", label_delimiter: str | None = None, suffix: str = "",
                   class_names: Sequence[str] | None = None, channels: int | None = None) -> ImageSet:
    """Images named in a CSV column (`image_dir/<name><suffix>`) with labels from another column.

    `label_delimiter=" "` reads multi-label rows ("agriculture clear primary", as in the planet competition)
    as float32 multi-hot labels; None reads one class per row. Classes are the sorted labels found (in
    numeric order when all are integers), or `class_names`: then any other label is an error."""
    if not os.path.isfile(csv_path):
        raise InputError(f"CSV file not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets write a BOM
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for column in (file_column, label_column):
            if column not in columns:
                raise InputError(f"{csv_path} has no column {column!r} (its columns: {', '.join(columns) or 'none'})")
        rows = [(reader.line_num, (row[file_column] or "").strip(), row[label_column] or "") for row in reader]
    if not rows:
        raise InputError(f"{csv_path} has no rows")
    tags = [_split_labels(label, label_delimiter) for _, _, label in rows]
    for (line, name, label), row_tags in zip(rows, tags):
        if not name:
            raise InputError(f"{csv_path} line {line}: empty file name in column {file_column!r}")
        if not row_tags or not row_tags[0]:
            raise InputError(f"{csv_path} line {line}: empty label in column {label_column!r}")
    if class_names is None:
        class_names = _sorted_classes({t for row_tags in tags for t in row_tags})
    index = {name: i for i, name in enumerate(class_names)}
    for (line, _, _), row_tags in zip(rows, tags):
        for tag in row_tags:
            if tag not in index:
                raise InputError(f"{csv_path} line {line}: label {tag!r} is not one of the {len(class_names)} "
                                 f"classes ({_preview(class_names)})")
    if label_delimiter is None:
        labels = np.asarray([index[row_tags[0]] for row_tags in tags], np.int32)
    else:
        labels = np.zeros((len(rows), len(class_names)), np.float32)
        for i, row_tags in enumerate(tags):
            labels[i, [index[t] for t in row_tags]] = 1.0
    paths = [os.path.join(image_dir, name + suffix) for _, name, _ in rows]
    return ImageSet(decode_files(paths, size, channels), labels, tuple(class_names), tuple(paths))


def load_tfds_images(name: str, split: str, size: int, data_dir: str | None = None, image_key: str = "image",
                     label_key: str = "label", download: bool = True, channels: int | None = None) -> ImageSet:
    """A TFDS catalog dataset (e.g. "oxford_iiit_pet", "cats_vs_dogs") read through `tfds.data_source`.

    Reading the prepared ArrayRecord files needs no TensorFlow. Preparing a catalog dataset the first time
    (download + conversion) runs the catalog's builder, which may need TensorFlow (`pip install
    tensorflow-cpu`) and network access: do it once on a cloud machine, or copy a prepared `data_dir` over.
    `split` may be a slice, e.g. "train[:90%]" (cats_vs_dogs has only a train split)."""
    import tensorflow_datasets as tfds  # imported here: folder and CSV users do not pay for it

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
    except tfds.core.registered.DatasetNotFoundError:
        raise InputError(f"TFDS has no dataset {name!r}") from None
    except Exception as e:  # any failure to find, download or prepare the data: say which and how to fix
        raise InputError(f"cannot load TFDS dataset {name!r} split {split!r} from {data_dir or '~/tensorflow_datasets'}"
                         f": {type(e).__name__}: {_first_line(e)} (preparing catalog datasets may need TensorFlow "
                         f"and network access: prepare it once on a cloud machine)") from None
    if not len(source):
        raise InputError(f"TFDS dataset {name!r} split {split!r} has no examples")
    class_names = tuple(source.dataset_info.features[label_key].names)
    images, labels = [], []
    for i in range(len(source)):
        record = source[i]
        images.append(fit(PIL.Image.fromarray(_squeeze_gray(record[image_key])), size, channels))
        labels.append(int(record[label_key]))
    return ImageSet(_stack(images, channels), np.asarray(labels, np.int32), class_names,
                    tuple(f"{name}/{split}[{i}]" for i in range(len(images))))


def decode_files(paths: Sequence[str], size: int, channels: int | None = None) -> np.ndarray:
    """Decodes and resizes image files (several at once) into uint8 NxSxSxC; names every unreadable file."""
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda p: _decode_or_error(p, size, channels), paths))
    failed = [(path, d) for path, d in zip(paths, decoded) if isinstance(d, str)]
    if failed:
        path, reason = failed[0]
        others = f" (and {len(failed) - 1} more: {_preview([p for p, _ in failed[1:]])})" if len(failed) > 1 else ""
        raise InputError(f"cannot read image {path}: {reason}{others}")
    return _stack(decoded, channels)


def fit(image: PIL.Image.Image, size: int, channels: int | None = None) -> np.ndarray:
    """Scales the shorter side to `size` and cuts out the centre square: uint8 SxSx1 or SxSx3.

    `channels` None keeps grayscale images gray and makes everything else (palette, RGBA, CMYK) RGB."""
    if channels is None:
        channels = 1 if image.mode in _GRAYSCALE_MODES else 3
    mode = "L" if channels == 1 else "RGB"
    image = PIL.ImageOps.fit(image.convert(mode), (size, size), PIL.Image.Resampling.BILINEAR)
    array = np.asarray(image, np.uint8)
    return array[..., None] if array.ndim == 2 else array


def channel_mean_std(images_NxHxWxC: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units (float32 C each).

    Summed in chunks so that a large dataset does not need a float copy."""
    total = np.zeros(images_NxHxWxC.shape[-1]), np.zeros(images_NxHxWxC.shape[-1])
    for start in range(0, len(images_NxHxWxC), chunk):
        x = images_NxHxWxC[start:start + chunk].astype(np.float64) / 255.0
        total = total[0] + x.sum((0, 1, 2)), total[1] + (x * x).sum((0, 1, 2))
    count = images_NxHxWxC[..., 0].size
    mean = total[0] / count
    std = np.sqrt(np.maximum(total[1] / count - mean * mean, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def _decode_or_error(path: str, size: int, channels: int | None) -> np.ndarray | str:
    """The decoded image, or why it could not be read (a file's fault, whatever PIL raises)."""
    try:
        with PIL.Image.open(path) as image:
            image.draft("L" if channels == 1 else None, (size, size))  # JPEG: decode at a reduced scale
            return fit(image, size, channels)
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ... for bad files
        return f"{type(e).__name__}: {_first_line(e)}"


def _stack(images: list[np.ndarray], channels: int | None) -> np.ndarray:
    """Stacks SxSx1 and SxSx3 arrays (all one kind when `channels` is given), gray repeated to RGB if mixed."""
    if channels is None and any(a.shape[-1] == 3 for a in images):
        images = [np.repeat(a, 3, -1) if a.shape[-1] == 1 else a for a in images]
    return np.stack(images)


def _squeeze_gray(array: np.ndarray) -> np.ndarray:
    return array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array


def _split_labels(label: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return [label.strip()]
    return [t.strip() for t in (label.split() if delimiter.isspace() else label.split(delimiter)) if t.strip()]


def _sorted_classes(names: set[str]) -> list[str]:
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _preview(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(map(str, list(names)[:limit]))
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no details"
