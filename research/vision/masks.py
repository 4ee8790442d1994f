"""Your own segmentation data, no code: images and masks in folders (CamVid's and Carvana's layout), or a TFDS
catalog dataset with masks (oxford_iiit_pet's trimaps).

Folder layout (`load_mask_folder(root, ...)`):
  root/images/NAME.*      training images (any format PIL reads)
  root/masks/NAME.*       each image's mask, with the image's stem and the image's size
  root/valid/images, root/valid/masks   validation pairs; without them a fixed random `valid_fraction` of
                                        the training pairs is held out
  root/test/images, root/test/masks     optional, scored once at the end
  root/codes.txt          optional: one class per line, in index order. `name` alone: masks hold class
                          indices (grayscale or palette PNGs, as CamVid's); `name R G B`: masks are colour
                          images and each listed colour is that class. Without codes.txt the classes are
                          0..the largest index in the training masks.
Mask value `ignore_index` (255) is "void": it counts in no loss and no metric. A mask whose size differs from
its image, an index outside the classes or a colour not in codes.txt is a one-line InputError naming the file.

Images and masks are resized (squashed) to image_size x image_size: images bilinearly, masks by nearest
neighbour, so no pixel of a mask is cut away and a prediction maps back onto the original image exactly.
"""

import os
from typing import NamedTuple, Sequence

import numpy as np
import PIL.Image

from research.core.errors import InputError
from research.vision import images as image_files

IGNORE_INDEX = 255
VALID_SPLIT_SEED = 42
PETS_TRIMAP = {1: 1, 2: 0, 3: IGNORE_INDEX}  # oxford_iiit_pet: 1 pet, 2 background, 3 border (void)
PETS_CLASSES = ("background", "pet")


class MaskSet(NamedTuple):
    images: np.ndarray  # uint8 N x S x S x C
    masks: np.ndarray  # uint8 N x S x S: class indices, IGNORE_INDEX for void
    sources: tuple[str, ...]  # the image file (or "dataset/split[i]") of each pair


class MaskData(NamedTuple):
    train: MaskSet
    valid: MaskSet
    test: MaskSet | None
    class_names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...] | None  # each class's mask colour (codes.txt), or None: indices
    mean: np.ndarray  # per channel, of the training pixels in [0, 1]
    std: np.ndarray


# --- codes.txt ---------------------------------------------------------------------------------------------

def read_codes(path: str) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...] | None]:
    """(class names, colours or None) from a codes.txt: `name` or `name R G B` per line, all lines alike."""
    names, colours = [], []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts[1:]):
                colours.append(tuple(int(p) for p in parts[1:]))
            elif len(parts) != 1:
                raise InputError(f"{path} line {line_number}: expected `name` or `name R G B` (0-255), got {line.strip()!r}")
            names.append(parts[0])
    if not names:
        raise InputError(f"{path} lists no classes")
    if colours and len(colours) != len(names):
        raise InputError(f"{path}: every line needs a colour once one has (`name R G B`)")
    if len(set(colours)) != len(colours):
        raise InputError(f"{path}: two classes share a colour")
    return tuple(names), (tuple(colours) if colours else None)


# --- one pair ----------------------------------------------------------------------------------------------

def mask_indices(mask: PIL.Image.Image, path: str, num_classes: int | None,
                 colours: Sequence[tuple[int, int, int]] | None) -> np.ndarray:
    """The mask's class indices (uint8 H x W): its palette indices or gray values, or its colours looked up in
    `colours`. Checks every value against the classes (IGNORE_INDEX is allowed: void)."""
    if colours is not None:
        rgb_HxWx3 = np.asarray(mask.convert("RGB"), np.int64)
        codes_HxW = (rgb_HxWx3[..., 0] << 16) | (rgb_HxWx3[..., 1] << 8) | rgb_HxWx3[..., 2]
        lookup = {(r << 16) | (g << 8) | b: k for k, (r, g, b) in enumerate(colours)}
        found = np.unique(codes_HxW)
        unknown = [c for c in found if c not in lookup]
        if unknown:
            c = int(unknown[0])
            raise InputError(f"mask {path}: colour ({c >> 16}, {(c >> 8) & 255}, {c & 255}) is not one of the "
                             f"{len(colours)} colours in codes.txt")
        indices = np.zeros(codes_HxW.shape, np.uint8)
        for code in found:
            indices[codes_HxW == code] = lookup[int(code)]
        return indices
    if mask.mode not in ("P", "L", "I", "I;16", "1"):
        raise InputError(f"mask {path} is a {mask.mode} image: masks of class indices are grayscale or palette "
                         f"images (for colour masks, list `name R G B` in codes.txt)")
    values = np.asarray(mask)
    if num_classes is not None:
        bad = (values >= num_classes) & (values != IGNORE_INDEX)
        if bad.any():
            raise InputError(f"mask {path}: index {int(values[bad][0])} is outside the {num_classes} classes "
                             f"(0..{num_classes - 1}, or {IGNORE_INDEX} for void)")
    elif (values < 0).any() or ((values > 255) & (values != IGNORE_INDEX)).any():
        raise InputError(f"mask {path}: indices must lie in 0..255")
    return values.astype(np.uint8)


def read_pair(image_path: str, mask_path: str, size: int, channels: int, num_classes: int | None,
              colours) -> tuple[np.ndarray, np.ndarray]:
    """(image S x S x C uint8, mask S x S uint8) of one pair, both squashed to `size`."""
    try:
        image = PIL.Image.open(image_path)
        image.load()
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds of errors for bad files
        raise InputError(f"cannot read image {image_path}: {type(e).__name__}: {e}") from None
    try:
        mask = PIL.Image.open(mask_path)
        mask.load()
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot read mask {mask_path}: {type(e).__name__}: {e}") from None
    if mask.size != image.size:
        raise InputError(f"mask {mask_path} is {mask.size[0]}x{mask.size[1]} but its image {image_path} is "
                         f"{image.size[0]}x{image.size[1]} (width x height)")
    indices = mask_indices(mask, mask_path, num_classes, colours)
    return resize_pair(image, indices, size, channels)


def resize_pair(image: PIL.Image.Image, indices_HxW: np.ndarray, size: int,
                channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (bilinear, `channels` 1 or 3) and mask (nearest) squashed to size x size."""
    image = image.convert("L" if channels == 1 else "RGB").resize((size, size), PIL.Image.Resampling.BILINEAR)
    mask = PIL.Image.fromarray(indices_HxW).resize((size, size), PIL.Image.Resampling.NEAREST)
    array = np.asarray(image, np.uint8)
    return (array[..., None] if array.ndim == 2 else array), np.asarray(mask, np.uint8)


# --- a folder of pairs -------------------------------------------------------------------------------------

def _pairs(folder: str) -> list[tuple[str, str]]:
    """(image, mask) paths in folder/images and folder/masks, matched by stem, sorted by name."""
    image_dir, mask_dir = os.path.join(folder, "images"), os.path.join(folder, "masks")
    for d in (image_dir, mask_dir):
        if not os.path.isdir(d):
            raise InputError(f"{d} does not exist (own masks need {folder}/images and {folder}/masks)")
    is_image = lambda name: os.path.splitext(name)[1].lower() in image_files.IMAGE_EXTENSIONS
    masks = {}
    for name in sorted(os.listdir(mask_dir)):
        if is_image(name):
            masks.setdefault(os.path.splitext(name)[0], os.path.join(mask_dir, name))
    pairs = []
    for name in sorted(os.listdir(image_dir)):
        if not is_image(name):
            continue
        stem = os.path.splitext(name)[0]
        if stem not in masks:
            raise InputError(f"image {os.path.join(image_dir, name)} has no mask {mask_dir}/{stem}.*")
        pairs.append((os.path.join(image_dir, name), masks[stem]))
    if not pairs:
        raise InputError(f"no images in {image_dir}")
    return pairs


def _channels(image_path: str) -> int:
    with PIL.Image.open(image_path) as image:
        return 1 if image.mode in ("1", "L", "LA", "I", "I;16", "F") else 3


def _read_set(pairs, size: int, channels: int, num_classes: int | None, colours) -> MaskSet:
    read = [read_pair(i, m, size, channels, num_classes, colours) for i, m in pairs]
    return MaskSet(np.stack([r[0] for r in read]), np.stack([r[1] for r in read]), tuple(i for i, _ in pairs))


def load_mask_folder(root: str, image_size: int, valid_fraction: float = 0.2) -> MaskData:
    """The pairs under `root` (layout in the module docstring), split into train / valid / test."""
    if not os.path.isdir(root):
        raise InputError(f"config.data.path={root} does not exist (a folder with images/ and masks/)")
    codes_path = os.path.join(root, "codes.txt")
    class_names, colours = read_codes(codes_path) if os.path.exists(codes_path) else (None, None)
    train_pairs = _pairs(root)
    channels = _channels(train_pairs[0][0])
    num_classes = len(class_names) if class_names else None
    train = _read_set(train_pairs, image_size, channels, num_classes, colours)
    if class_names is None:
        present = train.masks[train.masks != IGNORE_INDEX]
        num_classes = int(present.max()) + 1 if present.size else 1
        class_names = tuple(str(k) for k in range(num_classes))
    optional = lambda split: (_read_set(_pairs(os.path.join(root, split)), image_size, channels, num_classes, colours)
                              if os.path.isdir(os.path.join(root, split)) else None)
    valid, test = optional("valid"), optional("test")
    if valid is None:
        train, valid = hold_out(train, valid_fraction)
    mean, std = image_files.channel_mean_std(train.images)
    return MaskData(train, valid, test, class_names, colours, mean, std)


def hold_out(train: MaskSet, fraction: float) -> tuple[MaskSet, MaskSet]:
    """(the rest, a fixed random `fraction` of the pairs): the same pairs for every run."""
    if not 0 < fraction < 1:
        raise InputError(f"config.data.valid_fraction={fraction} must lie strictly between 0 and 1")
    order = np.random.default_rng(VALID_SPLIT_SEED).permutation(len(train.images))
    num_valid = int(round(fraction * len(order)))
    if num_valid == 0 or num_valid == len(order):
        raise InputError(f"config.data.valid_fraction={fraction} of {len(order)} pairs leaves an empty split")
    rows = lambda r: MaskSet(train.images[r], train.masks[r], tuple(train.sources[i] for i in r))
    return rows(np.sort(order[num_valid:])), rows(np.sort(order[:num_valid]))


# --- TFDS catalog datasets ---------------------------------------------------------------------------------

def load_tfds_masks(name: str, split: str, size: int, data_dir: str | None = None, image_key: str = "image",
                    mask_key: str = "segmentation_mask", values: dict[int, int] | None = None,
                    limit: int = 0) -> MaskSet:
    """Images and masks of a TFDS catalog dataset (read through `tfds.data_source`, no TensorFlow), squashed to
    size x size RGB; `values` maps the stored mask values to class indices (oxford_iiit_pet: PETS_TRIMAP), and
    any other value is an InputError naming the record. `limit` > 0 reads the first `limit` records."""
    import tensorflow_datasets as tfds  # here: folder users do not pay for it

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - any failure to find, download or prepare: say which and how
        raise InputError(f"cannot load TFDS dataset {name!r} split {split!r} from {data_dir or '~/tensorflow_datasets'}: "
                         f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''} (prepare "
                         f"catalog datasets once on a machine with a network)") from None
    count = min(len(source), limit) if limit else len(source)
    lookup = np.full(256, -1, np.int64)
    for stored, index in (values or {k: k for k in range(256)}).items():
        lookup[stored] = index
    images_out, masks_out, sources = [], [], []
    for i in range(count):
        record, where = source[i], f"{name}/{split}[{i}]"
        image, mask = np.asarray(record[image_key]), np.asarray(record[mask_key])
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if mask.shape != image.shape[:2]:
            raise InputError(f"{where}: mask is {mask.shape} but its image is {image.shape[:2]} (height x width)")
        mapped = lookup[mask]
        if (mapped < 0).any():
            raise InputError(f"{where}: mask value {int(mask[mapped < 0][0])} is not one of {sorted(values or {})}")
        pil = PIL.Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
        image_array, mask_array = resize_pair(pil, mapped.astype(np.uint8), size, 3)
        images_out.append(image_array)
        masks_out.append(mask_array)
        sources.append(where)
    if not images_out:
        raise InputError(f"TFDS dataset {name!r} split {split!r} has no examples")
    return MaskSet(np.stack(images_out), np.stack(masks_out), tuple(sources))
