"""A character corpus: text files read as one string, and a vocabulary of the characters that occur
(`CharVocab`, with an id for unseen characters, saved as JSON with a trained model).

For the text-generation lesson (char-RNN): the model reads and predicts character ids. Bad input (a missing
file, undecodable bytes, an empty corpus) is an `InputError` naming the file(s).
"""

import dataclasses
import json
import os
import warnings
from typing import Sequence

import numpy as np

from research.core.errors import InputError


@dataclasses.dataclass(frozen=True)
class CharCorpus:
    ids_N: np.ndarray  # int32 character ids of the whole corpus, files joined in the order given
    vocab: tuple[str, ...]  # id -> character, sorted by code point

    def encode(self, text: str) -> np.ndarray:
        index = {char: i for i, char in enumerate(self.vocab)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise InputError(f"characters not in the corpus vocabulary: {''.join(unknown)!r}")
        return np.asarray([index[char] for char in text], np.int32)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


def load_text(paths: Sequence[str], encoding: str = "utf-8") -> CharCorpus:
    """Reads `paths` (files, or directories whose regular files are read in name order) into a CharCorpus."""
    if isinstance(paths, str):
        paths = [paths]
    files = []
    for path in paths:
        if os.path.isdir(path):
            files.extend(os.path.join(path, name) for name in sorted(os.listdir(path))
                         if os.path.isfile(os.path.join(path, name)))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise InputError(f"text file or directory not found: {path}")
    if not files:
        raise InputError(f"the text corpus is empty: no files in {', '.join(paths) or 'the paths given (none)'}")
    texts = []
    for path in files:
        try:
            with open(path, encoding=encoding) as f:
                texts.append(f.read())
        except UnicodeDecodeError as e:
            raise InputError(f"{path} is not {encoding} text (byte {e.start}: {e.reason})") from None
    text = "".join(texts)
    if not text:
        raise InputError(f"the text corpus is empty: no characters in {', '.join(files)}")
    vocab = tuple(sorted(set(text)))
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    ids_N = np.searchsorted(np.asarray([ord(c) for c in vocab], np.uint32), codes).astype(np.int32)
    return CharCorpus(ids_N, vocab)


UNKNOWN_CHAR = "\ufffd"  # id 0 of a CharVocab: characters not seen in training


@dataclasses.dataclass(frozen=True)
class CharVocab:
    """Characters of a training text (id 0: UNKNOWN_CHAR, then the characters by code point); characters not
    in it encode to 0. Saved as JSON with a trained model, so prediction and sampling use the same ids."""
    chars: tuple[str, ...]

    @classmethod
    def build(cls, texts: Sequence[str]) -> "CharVocab":
        seen = set().union(*map(set, texts)) - {UNKNOWN_CHAR}
        if not seen:
            raise InputError("the text corpus is empty: no characters to build a vocabulary from")
        return cls((UNKNOWN_CHAR, *sorted(seen)))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        index = {char: i for i, char in enumerate(self.chars)}
        return np.fromiter((index.get(char, 0) for char in text), np.int32, len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"chars": list(self.chars)}, f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> "CharVocab":
        if not os.path.exists(path):
            raise InputError(f"{path} does not exist: the run saved no character vocabulary")
        with open(path, encoding="utf-8") as f:
            return cls(tuple(json.load(f)["chars"]))


def join_documents(texts: Sequence[str], separator: str = "%\n") -> str:
    """Documents as one stream, in the fortune files' own format: each text followed by a line "%"."""
    return "".join((t if t.endswith("\n") else t + "\n") + separator for t in texts)


def read_documents(path: str, encoding: str = "utf-8") -> list[str]:
    """Your own text: the files under `path` (a folder, read recursively in name order, or one file), one
    document per file; with fewer than 10 files, each file's paragraphs (split on blank lines) are the
    documents, so a single book can still be split by document. Empty files are skipped with a warning;
    undecodable bytes are an InputError naming the file."""
    if os.path.isfile(path):
        files = [path]
    elif os.path.isdir(path):
        files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    else:
        raise InputError(f"text file or directory not found: {path}")
    texts = []
    for file in files:
        try:
            with open(file, encoding=encoding) as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise InputError(f"{file} is not {encoding} text (byte {e.start}: {e.reason})") from None
        if text.strip():
            texts.append(text)
        else:
            warnings.warn(f"skipping empty text file {file}")
    if not texts:
        raise InputError(f"the text corpus is empty: no non-empty files in {path}")
    if len(texts) < 10:
        texts = [p.strip("\n") + "\n" for text in texts for p in text.split("\n\n") if p.strip()]
    return texts


def split_documents(texts: Sequence, seed: int, test_fraction: float, valid_fraction: float):
    """(train, valid, test) lists of documents, shuffled by `seed` and split by document."""
    order = np.random.default_rng(seed).permutation(len(texts))
    num_test, num_valid = round(test_fraction * len(texts)), round(valid_fraction * len(texts))
    if len(texts) - num_test - num_valid < 1 or (valid_fraction and not num_valid) or (test_fraction and not num_test):
        raise InputError(f"{len(texts)} documents are too few to hold out {test_fraction:.0%} for test and "
                         f"{valid_fraction:.0%} for validation")
    pick = lambda rows: [texts[i] for i in rows]
    return (pick(order[num_test + num_valid:]), pick(order[num_test:num_test + num_valid]),
            pick(order[:num_test]))
