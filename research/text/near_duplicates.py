"""Exact and near-duplicate texts, so that no held-out text has a copy in training (a quote filed under two fortune
topics, re-wrapped or re-attributed, would let an n-gram or char model recite the test set).

Two texts are near-duplicates when they are the same after normalising (lower case, punctuation as spaces,
whitespace collapsed), or when their first PREFIX normalised characters are the same (the same quote with a
different attribution line or a different line wrap).
"""

import re
from typing import Sequence

PREFIX = 60
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def keys(text: str) -> tuple[str, ...]:
    """What a near-duplicate shares with `text`: its normalised form, and its normalised prefix when long enough."""
    normal = normalise(text)
    return ("=" + normal, "^" + normal[:PREFIX]) if len(normal) >= PREFIX else ("=" + normal,)


def collapse(texts: Sequence) -> list:
    """`texts` without near-duplicates of an earlier text (the first of each group is kept, order kept)."""
    seen, kept = set(), []
    for text in texts:
        text_keys = keys(text)
        if not seen.intersection(text_keys):
            kept.append(text)
        seen.update(text_keys)
    return kept


def cross_split_counts(train: Sequence[str], valid: Sequence[str], test: Sequence[str]) -> dict[str, int]:
    """How many held-out texts have a copy in an earlier split: {"valid_in_train", "test_in_train",
    "test_in_valid"} each as "_exact" (the identical string) and "_near" (a near-duplicate, exact ones included)."""
    counts = {}
    for name, held, earlier in (("valid_in_train", valid, train), ("test_in_train", test, train),
                                ("test_in_valid", test, valid)):
        exact = set(earlier)
        near = {k for text in earlier for k in keys(text)}
        counts[name + "_exact"] = sum(text in exact for text in held)
        counts[name + "_near"] = sum(bool(near.intersection(keys(text))) for text in held)
    return counts
