"""A character corpus: text files read as one string, and a vocabulary of the characters that occur.

For the text-generation lesson (char-RNN): the model reads and predicts character ids. Bad input (a missing
file, undecodable bytes, an empty corpus) is an `InputError` naming the file(s).
"""

import dataclasses
import os
from typing import Sequence

import numpy as np

from research.errors import InputError


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
