"""A run's table from `config.data`: txhousing (the default), Kaggle's Rossmann CSVs, or any CSV with its target
named; split into training, validation (and test) rows, with the target's lags, and the preprocessing fitted on
the training rows. Also the new rows of a prediction, featured the same way."""

from typing import NamedTuple

import ml_collections
import pandas as pd

from research.core.errors import InputError
from research.tabular import lags, rossmann, txhousing
from research.tabular.dates import add_event_days, parse_dates
from research.tabular.preprocessing import Preprocessing, fit_preprocessing
from research.tabular.splits import split_rows
from research.tabular.table import (Columns, check_columns, check_target, comma_list, infer_columns,
                                    numeric_column, read_csv)


def data_config() -> ml_collections.ConfigDict:
    """The `config.data` keys this module reads, with txhousing's defaults."""
    placeholder = ml_collections.config_dict.placeholder
    return ml_collections.ConfigDict(dict(
        path="",  # "" = the bundled txhousing table; else a CSV file (rossmann: the directory of Kaggle's CSVs)
        rossmann=False,
        target="",  # the column to predict ("" = txhousing's `sales`)
        task="",  # "regression" or "classification"; "" = classification for a text/boolean target, else regression
        log_target=placeholder(bool),  # regression on log(target); None = when every training target is positive
        cat=placeholder(str), cont=placeholder(str), date=placeholder(str),  # comma-separated; None = inferred
        max_categories=30,  # inference: integer columns with at most this many values are categorical
        date_parts=placeholder(str),  # comma-separated parts of each date to use (tabular/dates.py); None = all
        # continuous inputs clipped to the training rows' range: no extrapolation of the trend into the validation
        # months (on txhousing, 4 seeds: exp-RMSPE 0.1406 +- 0.004 with 40 epochs, against 0.152 +- 0.015 without)
        clip_to_training_range=True,
        # continuous columns in model units: "robust" (median, interquartile range) or "standard" (mean, std),
        # then with smooth_clip x / sqrt(1 + (x / 3)^2) (research/tabular/preprocessing.py)
        scaling="robust", smooth_clip=True,
        events="",  # comma-separated boolean columns that get days_since_/days_until_ features (needs a date)
        # the target's own history as inputs: comma-separated lags in lag_unit ("months" or "days") within each
        # lag_group, e.g. "12,24"; each at least as long as the validation (and test) period (no leak).
        # None: txhousing's lags (research/tabular/txhousing.py) by city, no lags for your own table
        target_lags=placeholder(str), lag_unit="months", lag_group=placeholder(str),
        event_group="",  # the column within which those days are counted (e.g. a store)
        valid_by="",  # "date" (the last valid_months), "column" (valid_column), "random"; "" = date if there is one
        valid_months=12, valid_days=0,  # valid_days > 0 replaces valid_months
        test_months=0,  # > 0: the last test_months are a test period scored once; validation is just before
        valid_column="", valid_fraction=0.2, test_fraction=0.0))


class TableData(NamedTuple):
    """The fitted preprocessing and the arrays of each split (test None without a test split)."""
    prep: Preprocessing
    train: dict
    valid: dict
    test: dict | None = None


def read_table(d: ml_collections.ConfigDict) -> tuple[pd.DataFrame, Columns]:
    """The table and its column kinds, from `config.data`."""
    if d.rossmann:
        if not d.path:
            raise InputError("the rossmann preset needs --config.data.path=DIR (Kaggle's Rossmann CSVs)")
        frame = rossmann.read(d.path)
        given = Columns(d.target, rossmann.CAT, rossmann.CONT, ["Date"])
    elif not d.path:
        frame, given = txhousing.read(d.target)
    else:
        if not d.target:
            raise InputError(f"set --config.data.target to the column of {d.path} to predict")
        frame = read_csv(d.path)
        check_target(frame, d.target)
        given = None
    for event in comma_list(d.events):
        date = (given.date if given else comma_list(d.date) or [""])[0]
        if not date:
            raise InputError(f"data.events={d.events!r} needs a date column (data.date)")
        frame = add_event_days(frame, event, date, d.event_group or None)
    if given is None or d.cat is not None or d.cont is not None or d.date is not None:
        given = infer_columns(frame, given.target if given else d.target,
                              comma_list(d.cat) if d.cat is not None else (given.cat if given else None),
                              comma_list(d.cont) if d.cont is not None else (given.cont if given else None),
                              comma_list(d.date) if d.date is not None else (given.date if given else None),
                              d.max_categories)
    return frame, given


def task_kind(d: ml_collections.ConfigDict, frame: pd.DataFrame, target: str) -> str:
    """`data.task`, else classification for a text, boolean or two-valued target (0/1) and regression otherwise
    (printed)."""
    if d.task:
        return d.task
    values = frame[target]
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    kind = "regression" if numeric and values.nunique() > 2 else "classification"
    print(f"data.task inferred from the target {target!r}: {kind}")
    return kind


def load_table(config: ml_collections.ConfigDict) -> TableData:
    """The table of `config.data`, split, with its lags, and preprocessed by what the training rows fit."""
    d = config.data
    frame, columns = read_table(d)
    split = split_rows(d, frame, columns, config.seed)
    kind = task_kind(d, frame, columns.target)
    train = frame[split == 0]
    log_target = d.log_target
    if kind == "regression" and log_target is None:
        log_target = bool((numeric_column(train, columns.target) > 0).all())
        print(f"data.log_target: {log_target} (every training target positive: {log_target})")
    date_parts = d.date_parts if (d.date_parts is not None or d.path) else txhousing.DATE_PARTS
    frame, columns = lags.with_target_lags(d, frame, columns, bool(log_target))
    train = frame[split == 0]
    prep = fit_preprocessing(train, columns, kind, bool(log_target), comma_list(date_parts),
                             d.clip_to_training_range, d.scaling, d.smooth_clip, config.model.numeric_bins)
    arrays = lambda part: prep.arrays(frame[split == part])
    print(f"rows: {len(train)} train, {int((split == 1).sum())} valid, {int((split == 2).sum())} test; "
          f"categorical inputs {prep.cat_names}, continuous inputs {prep.cont_names}")
    return TableData(prep=prep, train=arrays(0), valid=arrays(1), test=arrays(2) if (split == 2).any() else None)


def new_rows(d: ml_collections.ConfigDict, prep: Preprocessing, input_path: str) -> pd.DataFrame:
    """The rows of the CSV `input_path` featured as the training rows were: Rossmann's joins, event days, the
    target's lags (read from the training table and the new rows)."""
    if d.rossmann:
        return rossmann.read_new_rows(d.path, input_path)
    frame = read_csv(input_path)
    for event in comma_list(d.events):
        frame = add_event_days(frame, event, prep.date_columns[0], d.event_group or None)
    if lags.target_lags(d):
        frame = _with_lags_from_history(d, frame, prep)
    return frame


def _with_lags_from_history(d: ml_collections.ConfigDict, rows: pd.DataFrame, prep: Preprocessing) -> pd.DataFrame:
    """New rows with the target's lags read from the training table (`config.data`) and the new rows; a new row
    replaces the table's row of the same group and date."""
    history, columns = read_table(d)
    date = columns.date[0]
    keys = [c for c in (lags.lag_group(d), date) if c]
    check_columns(rows, keys)
    rows = rows.assign(**{date: parse_dates(rows, date)})
    history = history.assign(**{date: parse_dates(history, date)})
    known = history[keys].merge(rows[keys].drop_duplicates(), how="left", on=keys, indicator=True)
    history = history[(known["_merge"] == "left_only").to_numpy()]
    both = pd.concat([history.assign(_new_row=False), rows.assign(_new_row=True)], ignore_index=True)
    both, with_lags = lags.with_target_lags(d, both, columns, prep.log_target)
    lag_names = [name for name in with_lags.cont if name not in columns.cont]
    return both.loc[both["_new_row"], [*rows.columns, *lag_names]].reset_index(drop=True)
