"""Your own labelled text for the classifier, no code: a folder per class in the aclImdb layout
(DIR/train/<class>/*.txt, DIR/test/<class>/*.txt), a CSV with a text and a label column, or the TFDS catalog's
imdb_reviews (for the cloud: needs its download). Empty documents are skipped with a warning, undecodable
bytes and unknown test classes are one-line errors, a class missing from the test split is a warning.
"""

import csv
import os
import warnings

import numpy as np

from research.core.errors import InputError
from research.text.fortunes import LabelledTexts, Split


def read_text(path: str) -> str:
    """The whole of a utf-8 text file (an InputError naming the file when it is not utf-8)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not utf-8 text (byte {e.start}: {e.reason})") from None


def _labelled(texts, names, class_names, where) -> LabelledTexts:
    keep = [i for i, t in enumerate(texts) if t.strip()]
    if len(keep) < len(texts):
        warnings.warn(f"skipping {len(texts) - len(keep)} empty documents in {where}")
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({names[i] for i in keep} - set(index))
    if unknown:
        raise InputError(f"{where}: classes {unknown} are not among the training classes {class_names}")
    missing = sorted(set(class_names) - {names[i] for i in keep})
    if missing:
        warnings.warn(f"{where} has no documents of classes {missing}")
    return LabelledTexts([texts[i] for i in keep], np.asarray([index[names[i]] for i in keep], np.int32))


def read_class_folders(path: str, split: str, unlabelled: str = "") -> tuple[list[str], list[str]]:
    """(texts, class names) of path/split/<class>/* (sorted); a folder named `unlabelled` is not a class."""
    root = os.path.join(path, split)
    if not os.path.isdir(root):
        raise InputError(f"{root} is not a folder (expected {path}/{split}/<class>/*.txt)")
    texts, names = [], []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if os.path.isdir(folder) and name != unlabelled:
            for file in sorted(os.listdir(folder)):
                texts.append(html_breaks(read_text(os.path.join(folder, file))))
                names.append(name)
    if not texts:
        raise InputError(f"{root} holds no class folders with files")
    return texts, names


def read_unlabelled_folder(path: str, unlabelled: str) -> list[str]:
    """The texts of path/train/`unlabelled`/* (aclImdb's train/unsup), or none when there is no such folder."""
    folder = os.path.join(path, "train", unlabelled)
    if not unlabelled or not os.path.isdir(folder):
        return []
    return [html_breaks(read_text(os.path.join(folder, file))) for file in sorted(os.listdir(folder))]


def html_breaks(text: str) -> str:
    """HTML line breaks (`<br />`, as in IMDB's reviews) as new lines."""
    return text.replace("<br />", "\n")


def read_csv(path: str, text_column: str = "text", label_column: str = "label") -> tuple[list[str], list[str]]:
    if not os.path.isfile(path):
        raise InputError(f"CSV file not found: {path}")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for column in (text_column, label_column):
        if not rows or column not in rows[0]:
            raise InputError(f"{path} has no column {column!r}")
    return [r[text_column] or "" for r in rows], [str(r[label_column]) for r in rows]


def stratified_split(texts, names, fraction: float, seed: int):
    """Two lists of row indices: the rest, and `fraction` of each class."""
    rng = np.random.default_rng(seed)
    held = []
    names = np.asarray(names)
    for name in sorted(set(names)):
        rows = rng.permutation(np.flatnonzero(names == name))
        held.extend(rows[:round(fraction * len(rows))].tolist())
    held_set = set(held)
    return [i for i in range(len(texts)) if i not in held_set], sorted(held)


def load(source: str, path: str, seed: int, valid_fraction: float = 0.1, test_fraction: float = 0.2,
         text_column: str = "text", label_column: str = "label", data_dir: str = "",
         unlabelled_folder: str = "") -> tuple[Split, list[str]]:
    """(train/valid/test LabelledTexts, class names) from `source` in {"folder", "csv", "tfds"}; a folder's
    train/`unlabelled_folder` is not a class (read_unlabelled_folder reads it)."""
    if source == "folder":
        train_texts, train_names = read_class_folders(path, "train", unlabelled_folder)
        test_texts, test_names = read_class_folders(path, "test", unlabelled_folder)
    elif source == "csv":
        texts, names = read_csv(path, text_column, label_column)
        rest, held = stratified_split(texts, names, test_fraction, seed)
        train_texts, train_names = [texts[i] for i in rest], [names[i] for i in rest]
        test_texts, test_names = [texts[i] for i in held], [names[i] for i in held]
    elif source == "tfds":
        train_texts, train_names = _tfds_imdb("train", data_dir)
        test_texts, test_names = _tfds_imdb("test", data_dir)
    else:
        raise InputError(f"config.data.source must be 'fortunes', 'folder', 'csv' or 'tfds', got {source!r}")
    class_names = sorted(set(train_names))
    rest, held = stratified_split(train_texts, train_names, valid_fraction, seed)
    pick = lambda rows: ([train_texts[i] for i in rows], [train_names[i] for i in rows])
    return Split(_labelled(*pick(rest), class_names, f"{path or source} train"),
                 _labelled(*pick(held), class_names, f"{path or source} valid"),
                 _labelled(test_texts, test_names, class_names, f"{path or source} test")), class_names


def tfds_imdb_unlabelled(data_dir: str = "") -> list[str]:
    """imdb_reviews' 50k unlabelled reviews (for the language model)."""
    return _tfds_imdb("unsupervised", data_dir)[0]


def _tfds_imdb(split: str, data_dir: str) -> tuple[list[str], list[str]]:
    import tensorflow_datasets as tfds  # the catalog only where it is used
    source = tfds.data_source("imdb_reviews", split=split, data_dir=data_dir or None)
    names = ("neg", "pos")
    texts, labels = [], []
    for example in source:
        text = example["text"]
        texts.append(text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text))
        labels.append(names[int(example["label"])] if split != "unsupervised" else "")
    return [html_breaks(t) for t in texts], labels


def labels_per_class(labelled: LabelledTexts, n: int, seed: int) -> tuple[LabelledTexts, list[str]]:
    """(at most `n` documents of each class, drawn by `seed`, in their original order; the other texts, unlabelled):
    ULMFiT's few-label setting, where the texts whose labels are not used still serve language-model fine-tuning."""
    rng = np.random.default_rng(seed)
    keep = set()
    for label in np.unique(labelled.labels):
        rows = rng.permutation(np.flatnonzero(labelled.labels == label))
        keep.update(rows[:n].tolist())
    kept = sorted(keep)
    rest = [labelled.texts[i] for i in range(len(labelled.texts)) if i not in keep]
    return LabelledTexts([labelled.texts[i] for i in kept], labelled.labels[kept]), rest
