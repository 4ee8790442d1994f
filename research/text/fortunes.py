"""The Debian `fortunes` package (BSD fortune files, ~15k short texts, 2.6M characters): one file per topic
under /usr/share/games/fortunes (or $FORTUNES_DIR), texts separated by lines holding only "%".

Splits are by document and seeded, so no text is in two splits:
- `lm_split`: all topics together, held out by document for language models (test 10%, valid 5%).
- `topic_split`: the largest topic files as classes, held out stratified by topic (test 20%, valid 10% of the
  rest) for the topic classifier.
Backspace overstriking (old terminal underlining: "_\\bA") is removed.
"""

import collections
import os
import re
from typing import NamedTuple

import numpy as np

from research.core.errors import InputError
from research.text.documents import split_documents

DEBIAN_DIR = "/usr/share/games/fortunes"
INSTALL_HINT = "install Debian's package with `apt-get install -y fortunes` or set FORTUNES_DIR"
_OVERSTRIKE = re.compile("[^\b]?\b")  # a character and the backspace that strikes it over


def fortunes_dir(path: str = "") -> str:
    path = path or os.environ.get("FORTUNES_DIR", DEBIAN_DIR)
    if not os.path.isdir(path):
        raise InputError(f"fortune directory not found: {path} ({INSTALL_HINT})")
    return path


def topic_files(directory: str = "") -> dict[str, str]:
    """{topic: path} of the fortune files in `directory` (regular files without the .dat/.u8 indexes)."""
    directory = fortunes_dir(directory)
    found = {name: os.path.join(directory, name) for name in sorted(os.listdir(directory))
             if "." not in name and os.path.isfile(os.path.join(directory, name))
             and not os.path.islink(os.path.join(directory, name))}
    if not found:
        raise InputError(f"no fortune files in {directory} ({INSTALL_HINT})")
    return found


def read_fortunes(path: str) -> list[str]:
    """The texts of one fortune file, overstriking removed, surrounding blank lines stripped, empty ones dropped.
    Undecodable bytes are replaced (a few files mix encodings)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    texts = []
    for chunk in re.split(r"^%\n", text.replace("\r\n", "\n") + "\n", flags=re.MULTILINE):
        while "\b" in chunk:  # "___\b\b\bword" underlines: one character per backspace, innermost first
            chunk = _OVERSTRIKE.sub("", chunk, count=1)
        chunk = chunk.strip("\n")
        if chunk.strip():
            texts.append(chunk + "\n")
    return texts


class Split(NamedTuple):
    train: list
    valid: list
    test: list


def lm_split(directory: str = "", seed: int = 0, test_fraction: float = 0.1, valid_fraction: float = 0.05) -> Split:
    """Every fortune of every topic file, shuffled by `seed` and split by document into train/valid/test texts."""
    texts = [t for path in topic_files(directory).values() for t in read_fortunes(path)]
    texts = list(dict.fromkeys(texts))  # a few fortunes are in two files: once each, so no split shares one
    return Split(*split_documents(texts, seed, test_fraction, valid_fraction))


class LabelledTexts(NamedTuple):
    texts: list
    labels: np.ndarray  # int32 class ids


def topic_split(directory: str = "", num_topics: int = 10, seed: int = 0, test_fraction: float = 0.2,
                valid_fraction: float = 0.1) -> tuple[Split, list[str]]:
    """(Split of LabelledTexts, class names): the `num_topics` largest topic files (by number of texts) as
    classes, each class split test / valid / train by `seed` (stratified)."""
    files = topic_files(directory)
    by_topic = {topic: read_fortunes(path) for topic, path in files.items()}
    names = sorted(sorted(by_topic, key=lambda t: -len(by_topic[t]))[:num_topics])
    topics_of = collections.Counter(t for name in names for t in set(by_topic[name]))
    by_topic = {name: [t for t in dict.fromkeys(by_topic[name]) if topics_of[t] == 1] for name in names}
    rng = np.random.default_rng(seed)
    parts = {"train": ([], []), "valid": ([], []), "test": ([], [])}
    for label, name in enumerate(names):
        texts = by_topic[name]
        order = rng.permutation(len(texts))
        num_test = round(test_fraction * len(texts))
        num_valid = round(valid_fraction * (len(texts) - num_test))
        for split, rows in (("test", order[:num_test]), ("valid", order[num_test:num_test + num_valid]),
                            ("train", order[num_test + num_valid:])):
            parts[split][0].extend(texts[i] for i in rows)
            parts[split][1].extend([label] * len(rows))
    make = lambda split: LabelledTexts(parts[split][0], np.asarray(parts[split][1], np.int32))
    return Split(make("train"), make("valid"), make("test")), names
