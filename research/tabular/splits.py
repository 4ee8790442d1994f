"""Which rows train, validate and test: by date (the last months or days, as Rossmann validated on its last
weeks), by a column, or at random; 0 (train), 1 (valid), 2 (test) per row."""

import ml_collections
import numpy as np
import pandas as pd

from research.core.errors import InputError
from research.tabular.dates import parse_dates
from research.tabular.table import Columns, check_columns, first_row


def split_rows(d: ml_collections.ConfigDict, frame: pd.DataFrame, columns: Columns, seed: int) -> np.ndarray:
    """0 (train), 1 (valid), 2 (test) per row, as `config.data.valid_by` says."""
    valid_by = d.valid_by or ("date" if columns.date else "random")
    if valid_by == "date":
        if not columns.date:
            raise InputError("data.valid_by='date' needs a date column (data.date)")
        dates = parse_dates(frame, columns.date[0])
        if d.valid_days:
            last = dates.max()
            split = np.where(dates > last - pd.Timedelta(days=d.valid_days), 1, 0)
        else:
            split = split_by_date(dates, d.valid_months, d.test_months)
    elif valid_by == "column":
        split = split_by_column(frame, d.valid_column)
    elif valid_by == "random":
        split = split_at_random(len(frame), d.valid_fraction, d.test_fraction, seed)
    else:
        raise InputError(f"data.valid_by={d.valid_by!r}: use 'date', 'column' or 'random'")
    if not (split == 0).any() or not (split == 1).any():
        raise InputError(f"data.valid_by={valid_by!r} leaves {int((split == 0).sum())} training and "
                         f"{int((split == 1).sum())} validation rows: both must be non-empty")
    return split


def split_by_date(dates: pd.Series, valid_months: int, test_months: int = 0) -> np.ndarray:
    """0 (train), 1 (valid), 2 (test) per row: the last `test_months` months of `dates` test, the
    `valid_months` before them validate, as Rossmann validated on its last weeks."""
    last = dates.max()
    test_from = last - pd.DateOffset(months=test_months)
    valid_from = test_from - pd.DateOffset(months=valid_months)
    split = np.where(dates > valid_from, 1, 0)
    if test_months:
        split = np.where(dates > test_from, 2, split)
    return split


def split_by_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """0/1/2 per row from a column holding "train"/"valid"/"test" (or true for validation rows)."""
    check_columns(frame, [column], "split column")
    values = frame[column]
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.fillna(0).astype(bool).to_numpy().astype(np.int64)
    names = {"train": 0, "valid": 1, "validation": 1, "test": 2}
    lower = values.astype(str).str.lower()
    unknown = ~lower.isin(list(names))
    if unknown.any():
        row, value = first_row(values, unknown)
        raise InputError(f"split column {column!r}: {value!r} at row {row} is not train/valid/test")
    return lower.map(names).to_numpy(np.int64)


def split_at_random(num_rows: int, valid_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(num_rows)
    split = np.zeros(num_rows, np.int64)
    num_test, num_valid = int(round(test_fraction * num_rows)), int(round(valid_fraction * num_rows))
    split[order[:num_test]] = 2
    split[order[num_test:num_test + num_valid]] = 1
    return split

