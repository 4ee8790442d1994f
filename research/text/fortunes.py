"""The Debian `fortunes` package (BSD fortune files, ~15k short texts, 2.6M characters): one file per topic
under /usr/share/games/fortunes (or $FORTUNES_DIR), texts separated by lines holding only "%".

Splits are by document and seeded, so no text is in two splits:
- `lm_split`: all topics together, held out by document for language models (test 10%, valid 5%).
- `topic_split`: the largest topic files as classes, held out stratified by topic (test 20%, valid 10% of the
  rest) for the topic classifier.
Some fortunes are filed twice, identical or nearly so (re-wrapped, re-attributed: research/text/near_duplicates.py).
By default (`dedup=True`) each group of near-duplicates is collapsed to its first text before splitting (and a
topic text with a near-duplicate in another topic is dropped, as its label is ambiguous), so no held-out text
has a copy in training; `duplicate_report` counts what the split would share without it.
Backspace overstriking (old terminal underlining: "_\\bA") is removed.
"""

import collections
import os
import re
from typing import NamedTuple

import numpy as np

from research.core.errors import InputError
from research.text import near_duplicates
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


def lm_split(directory: str = "", seed: int = 0, test_fraction: float = 0.1, valid_fraction: float = 0.05,
             dedup: bool = True) -> Split:
    """Every fortune of every topic file, shuffled by `seed` and split by document into train/valid/test texts."""
    texts = [t for path in topic_files(directory).values() for t in read_fortunes(path)]
    texts = list(dict.fromkeys(texts))  # a few fortunes are in two files: once each, so no split shares one
    if dedup:
        texts = near_duplicates.collapse(texts)
    return Split(*split_documents(texts, seed, test_fraction, valid_fraction))


def duplicate_report(directory: str = "", seed: int = 0) -> dict[str, dict[str, int]]:
    """{"lm_split" / "topic_split": counts of held-out texts with an exact or near copy in an earlier split
    (research/text/near_duplicates.cross_split_counts) without de-duplication, and with it (`_dedup`)}."""
    report = {}
    for dedup in (False, True):
        suffix = "_dedup" if dedup else ""
        report["lm_split" + suffix] = near_duplicates.cross_split_counts(*lm_split(directory, seed, dedup=dedup))
        topics, _ = topic_split(directory, seed=seed, dedup=dedup)
        report["topic_split" + suffix] = near_duplicates.cross_split_counts(topics.train.texts, topics.valid.texts,
                                                                             topics.test.texts)
    return report


class LabelledTexts(NamedTuple):
    texts: list
    labels: np.ndarray  # int32 class ids


def topic_split(directory: str = "", num_topics: int = 10, seed: int = 0, test_fraction: float = 0.2,
                valid_fraction: float = 0.1, dedup: bool = True) -> tuple[Split, list[str]]:
    """(Split of LabelledTexts, class names): the `num_topics` largest topic files (by number of texts) as
    classes, each class split test / valid / train by `seed` (stratified). A text filed under two of these topics
    is left out (near-duplicates too with `dedup`)."""
    files = topic_files(directory)
    by_topic = {topic: read_fortunes(path) for topic, path in files.items()}
    names = sorted(sorted(by_topic, key=lambda t: -len(by_topic[t]))[:num_topics])
    topics_of = collections.Counter(t for name in names for t in set(by_topic[name]))
    by_topic = {name: [t for t in dict.fromkeys(by_topic[name]) if topics_of[t] == 1] for name in names}
    if dedup:
        topics_of_key = collections.defaultdict(set)
        for name in names:
            for text in by_topic[name]:
                for key in near_duplicates.keys(text):
                    topics_of_key[key].add(name)
        one_topic = lambda text: all(len(topics_of_key[key]) == 1 for key in near_duplicates.keys(text))
        by_topic = {name: near_duplicates.collapse([t for t in by_topic[name] if one_topic(t)]) for name in names}
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
