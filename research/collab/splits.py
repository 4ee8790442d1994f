"""Splits of ratings into training and validation rows, as a 0/1 code per rating (0 train, 1 validation; 2
unused): random, GroupLens's u1-u5 folds of MovieLens-100k, or by time; and a holdout of the training rows for
choosing hyperparameters without reading the validation rows."""

import ml_collections
import numpy as np
import pandas as pd

from research.core.errors import InputError

FOLD_SIZE = 20_000  # GroupLens's u1-u5 test folds


def random_split(num_rows: int, valid_fraction: float = 0.2, seed: int = 42) -> np.ndarray:
    """0/1 per row: a random `valid_fraction` of the rows (numpy's PCG64 permutation of `seed`) is 1."""
    if not 0 < valid_fraction < 1:
        raise InputError(f"valid_fraction={valid_fraction} must be between 0 and 1")
    order = np.random.default_rng(seed).permutation(num_rows)
    split = np.zeros(num_rows, np.int32)
    split[order[:int(round(valid_fraction * num_rows))]] = 1
    return split


def grouplens_fold(num_rows: int, fold: int) -> np.ndarray:
    """0/1 per row of u.data for GroupLens's u{fold}.base (0) and u{fold}.test (1), as mku.sh cuts them."""
    if num_rows != 5 * FOLD_SIZE:
        raise InputError(f"the u1-u5 folds need MovieLens-100k's {5 * FOLD_SIZE} ratings, got {num_rows}")
    if fold not in (1, 2, 3, 4, 5):
        raise InputError(f"data.split=u{fold}: GroupLens's folds are u1 to u5")
    split = np.zeros(num_rows, np.int32)
    split[(fold - 1) * FOLD_SIZE:fold * FOLD_SIZE] = 1
    return split


def time_split(timestamps_N: np.ndarray, valid_fraction: float = 0.2, source: str = "") -> np.ndarray:
    """0/1 per row: the latest `valid_fraction` of the ratings (stable in row order on ties) is 1."""
    if np.isnan(timestamps_N).any():
        raise InputError(f"{source or 'the ratings'}: a time-ordered split needs a timestamp column "
                         f"(data.timestamp)")
    order = np.argsort(timestamps_N, kind="stable")
    split = np.zeros(len(timestamps_N), np.int32)
    split[order[len(order) - int(round(valid_fraction * len(order))):]] = 1
    return split


def holdout(split_N: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """For choosing hyperparameters without the validation rows: a random `fraction` of the training rows
    (split 0) becomes the validation rows (1) and the old validation rows are dropped (2)."""
    train = np.flatnonzero(split_N == 0)
    tuned = np.full(len(split_N), 2, np.int32)
    tuned[train] = random_split(len(train), fraction, seed)
    return tuned


def split_rows(d: ml_collections.ConfigDict, frame: pd.DataFrame, source: str) -> np.ndarray:
    """The split of the ratings `frame` that `config.data` asks for (`split`, `valid_fraction`, `split_seed`;
    with `tune`, the holdout of `tune_fraction` of the training rows)."""
    if d.split == "random":
        split = random_split(len(frame), d.valid_fraction, d.split_seed)
    elif d.split in ("u1", "u2", "u3", "u4", "u5"):
        if d.path:
            raise InputError(f"data.split={d.split!r}: GroupLens's folds exist for MovieLens-100k only")
        split = grouplens_fold(len(frame), int(d.split[1]))
    elif d.split == "time":
        split = time_split(frame["timestamp"].to_numpy(), d.valid_fraction, source)
    else:
        raise InputError(f"data.split={d.split!r}: use 'random', 'u1'..'u5' or 'time'")
    if d.tune:
        split = holdout(split, d.tune_fraction, d.split_seed + 1)
    return split
