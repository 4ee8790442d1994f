"""The target's own history as inputs: each row gets the target's value some months (or days) before, in the
same group (e.g. a city), as a forecaster would. A lag at least as long as the held-out period reads only rows
before that period, so `target_lags` refuses shorter ones."""

import ml_collections
import numpy as np
import pandas as pd

from research.core.errors import InputError
from research.tabular import txhousing
from research.tabular.dates import parse_dates
from research.tabular.table import Columns, check_columns, comma_list, first_row, numeric_column


def add_lags(frame: pd.DataFrame, column: str, date: str, lags, unit: str = "months", group: str | None = None,
             log: bool = False) -> pd.DataFrame:
    """Adds `COLUMN_lagL` for each L in `lags`: the value of `column` L months (or days) before the row's date,
    in the same `group` (e.g. a city), log(value) with `log`; missing where the table has no such row (the
    preprocessing then fills it and adds an indicator). A forecaster's history features: with a lag at least as
    long as the held-out period, a held-out row reads only rows before that period."""
    check_columns(frame, [c for c in (column, date, group) if c])
    if unit not in ("months", "days"):
        raise InputError(f"data.lag_unit={unit!r}: use 'months' or 'days'")
    keys = [group] if group else []
    dates = parse_dates(frame, date)
    history = frame[keys].copy()
    history["_lag_date"] = dates
    history["_lag_value"] = numeric_column(frame, column)
    repeated = history.duplicated(keys + ["_lag_date"])
    if repeated.any():
        raise InputError(f"lags of {column!r} need one row per {' and '.join(keys + [date])}: row "
                         f"{first_row(frame[date], repeated)[0]} repeats one")
    if log:
        history["_lag_value"] = np.log(history["_lag_value"].where(history["_lag_value"] > 0))
    frame = frame.copy()
    for lag in lags:
        shifted = history.assign(_lag_date=history["_lag_date"] + (pd.DateOffset(months=lag) if unit == "months"
                                                                    else pd.Timedelta(days=lag)))
        looked_up = pd.DataFrame({**{k: frame[k].to_numpy() for k in keys}, "_lag_date": dates.to_numpy()})
        looked_up = looked_up.merge(shifted, how="left", on=keys + ["_lag_date"])
        frame[f"{column}_lag{lag}"] = looked_up["_lag_value"].to_numpy()
    return frame



def target_lags(d: ml_collections.ConfigDict) -> list[int]:
    """`data.target_lags` as integers, checked against the held-out period: a shorter lag would feed a held-out
    row another held-out row's target."""
    spec = d.target_lags if d.target_lags is not None else ("" if d.path else txhousing.LAGS)
    lags = [int(v) for v in comma_list(spec)]
    if not lags:
        return []
    if (d.valid_by or "date") != "date":
        raise InputError(f"data.target_lags={spec!r} needs data.valid_by='date' (with a random or column "
                         "split, a lag would read held-out targets)")
    horizon, unit = (d.valid_days, "days") if d.valid_days else (d.valid_months + d.test_months, "months")
    if d.lag_unit != unit or min(lags) < horizon:
        raise InputError(f"data.target_lags={spec!r} {d.lag_unit}: each lag must be at least the held-out "
                         f"period, {horizon} {unit}")
    return lags


def lag_group(d: ml_collections.ConfigDict) -> str | None:
    """`data.lag_group`; None: txhousing's city, no group for your own table."""
    group = d.lag_group if d.lag_group is not None else ("" if d.path else txhousing.LAG_GROUP)
    return group or None


def with_target_lags(d: ml_collections.ConfigDict, frame: pd.DataFrame, columns: Columns,
                     log: bool) -> tuple[pd.DataFrame, Columns]:
    """The table with the target's lags (`data.target_lags`; log units when the target is modelled in logs)
    as continuous columns."""
    lags = target_lags(d)
    if not lags:
        return frame, columns
    if not columns.date:
        raise InputError(f"data.target_lags={','.join(map(str, lags))} needs a date column (data.date)")
    frame = add_lags(frame, columns.target, columns.date[0], lags, d.lag_unit, lag_group(d), log)
    names = [f"{columns.target}_lag{lag}" for lag in lags]
    return frame, Columns(columns.target, columns.cat, [*columns.cont, *names], columns.date)
