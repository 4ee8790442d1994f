"""Word tokenisation, fastai's special tokens, a vocabulary and numericalisation.

Splitting uses Hugging Face `tokenizers` (a pre-tokenizer with a regex, in Rust: fast, maintained, on PyPI,
no model to download). We chose it over spaCy's rule-based English tokenizer, which fastai uses, because it
installs as one small wheel with no language data and splits the ~15k fortunes in well under a second; the
rule below gives the same kind of tokens as spaCy on English (words, "n't" and "'s" split off, each
punctuation mark a token, newlines kept since they shape verse and quotes).

fastai's rules then mark what lower-casing would lose, so the vocabulary stays small:
  xxbos      beginning of a document
  xxmaj w    w was Capitalised ("The" -> xxmaj the)
  xxup w     w was in CAPITALS ("PANIC" -> xxup panic; words of 2+ letters)
  xxrep n c  a character repeated n >= 4 times ("!!!!" -> xxrep 4 !)
  xxunk      a word outside the vocabulary; xxpad pads classifier batches.
`detokenize` inverts them: the text comes back with its letters, case and repetitions, only its spacing
normalised.
"""

import collections
import json
import os
import re
from typing import Iterable, Sequence

import numpy as np
from tokenizers import Regex, pre_tokenizers

from research.core.errors import InputError

UNK, PAD, BOS, MAJ, UP, REP = "xxunk", "xxpad", "xxbos", "xxmaj", "xxup", "xxrep"
SPECIALS = (UNK, PAD, BOS, MAJ, UP, REP)
UNK_ID, PAD_ID, BOS_ID = 0, 1, 2

_WORDS = Regex(r"\n|n't\b|\w+(?=n't\b)|'\w+|\w+|[^\w\s]")
_SPLITTER = pre_tokenizers.Split(_WORDS, behavior="isolated")
_REPEATS = re.compile(r"(\S)\1{3,}")


def tokenize(text: str) -> list[str]:
    """One document -> tokens, starting with xxbos."""
    text = _REPEATS.sub(lambda m: f" {REP} {len(m.group(0))} {m.group(1)} ", text)
    words = [piece for piece, _ in _SPLITTER.pre_tokenize_str(text) if piece.strip(" \t\r\f\v")]
    tokens = [BOS]
    for word in words:
        if len(word) > 1 and word.isupper() and word not in SPECIALS:
            tokens += [UP, word.lower()]
        elif word[:1].isupper() and word[1:].islower():
            tokens += [MAJ, word.lower()]
        else:
            tokens.append(word)
    return tokens


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens -> text (words joined by spaces, lines by newlines), the case and repetition markers applied."""
    words, i = [], 0
    while i < len(tokens):
        token = tokens[i]
        if token == BOS or token == PAD:
            i += 1
        elif token in (MAJ, UP) and i + 1 < len(tokens):
            words.append(tokens[i + 1].capitalize() if token == MAJ else tokens[i + 1].upper())
            i += 2
        elif token == REP and i + 2 < len(tokens) and tokens[i + 1].isdigit():
            words.append(tokens[i + 2] * int(tokens[i + 1]))
            i += 3
        else:
            words.append(token)
            i += 1
    return " ".join(words).replace(" \n ", "\n").replace(" \n", "\n").replace("\n ", "\n")


class Vocab:
    """Token <-> id: the special tokens first (xxunk = 0, xxpad = 1, xxbos = 2), then the training tokens
    seen at least `min_freq` times, most frequent first (ties alphabetical), at most `max_size` in all."""

    def __init__(self, itos: Sequence[str]):
        self.itos = list(itos)
        self.stoi = {token: i for i, token in enumerate(self.itos)}

    @classmethod
    def build(cls, documents: Iterable[Sequence[str]], max_size: int = 30000, min_freq: int = 2) -> "Vocab":
        counts = collections.Counter(token for tokens in documents for token in tokens)
        frequent = sorted((t for t, n in counts.items() if n >= min_freq and t not in SPECIALS),
                          key=lambda t: (-counts[t], t))
        return cls([*SPECIALS, *frequent[:max(max_size - len(SPECIALS), 0)]])

    def __len__(self) -> int:
        return len(self.itos)

    def numericalize(self, tokens: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.stoi.get(t, UNK_ID) for t in tokens), np.int32, len(tokens))

    def textify(self, ids) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"itos": self.itos}, f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> "Vocab":
        if not os.path.exists(path):
            raise InputError(f"{path} does not exist: the run saved no vocabulary")
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f)["itos"])


def numericalize_documents(documents: Sequence[str], vocab: Vocab) -> list[np.ndarray]:
    return [vocab.numericalize(tokenize(doc)) for doc in documents]
