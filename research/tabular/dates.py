"""Date columns of a table: parsed (a bad value names its row), expanded into the parts a model sees, and the
"days since / until an event" features the course built for Rossmann's promotions and holidays."""

import numpy as np
import pandas as pd

from research.core.errors import InputError
from research.tabular.table import Columns, check_columns, first_row

# Parts that are categories (embedded) and parts that are numbers (normalised).
DATE_CAT_PARTS = ("month", "week", "day", "dayofweek", "is_month_start", "is_month_end", "is_quarter_start",
                  "is_quarter_end", "is_year_start", "is_year_end")
DATE_CONT_PARTS = ("year", "dayofyear", "elapsed")


def parse_dates(frame: pd.DataFrame, column: str) -> pd.Series:
    """The column as datetimes; a value that is not a date is an InputError naming the column and row."""
    check_columns(frame, [column], "date column")
    values = frame[column]
    parsed = pd.to_datetime(values, errors="coerce")
    bad = parsed.isna() & values.notna()
    if bad.any():
        row, value = first_row(values, bad)
        raise InputError(f"date column {column!r}: {value!r} at row {row} is not a date")
    return parsed


def date_parts(dates: pd.Series, prefix: str) -> pd.DataFrame:
    """PREFIX_year, _month, _week (ISO), _day, _dayofweek (Monday 0), _dayofyear, _is_month_start/_end,
    _is_quarter_start/_end, _is_year_start/_end and _elapsed (days since 1970-01-01)."""
    dt = dates.dt
    parts = {"year": dt.year, "month": dt.month, "week": dt.isocalendar().week.astype("Int64"), "day": dt.day,
             "dayofweek": dt.day_of_week, "dayofyear": dt.day_of_year,
             "is_month_start": dt.is_month_start, "is_month_end": dt.is_month_end,
             "is_quarter_start": dt.is_quarter_start, "is_quarter_end": dt.is_quarter_end,
             "is_year_start": dt.is_year_start, "is_year_end": dt.is_year_end,
             "elapsed": (dates - pd.Timestamp("1970-01-01")).dt.days}
    return pd.DataFrame({f"{prefix}_{name}": values for name, values in parts.items()}, index=dates.index)


def expand_dates(frame: pd.DataFrame, columns: Columns, parts=None) -> tuple[pd.DataFrame, Columns]:
    """The table with each date column replaced by its parts, and the column kinds that include `parts` (names
    from DATE_CAT_PARTS and DATE_CONT_PARTS; None: all of them)."""
    unknown = set(parts or ()) - set(DATE_CAT_PARTS + DATE_CONT_PARTS)
    if unknown:
        raise InputError(f"unknown date parts {sorted(unknown)}: use {', '.join(DATE_CAT_PARTS + DATE_CONT_PARTS)}")
    frame = frame.copy()
    cat, cont = list(columns.cat), list(columns.cont)
    for column in columns.date:
        expanded = date_parts(parse_dates(frame, column), column)
        frame = pd.concat([frame.drop(columns=[column]), expanded], axis=1)
        cat += [f"{column}_{p}" for p in DATE_CAT_PARTS if (parts is None or p in parts)]
        cont += [f"{column}_{p}" for p in DATE_CONT_PARTS if (parts is None or p in parts)]
    return frame, Columns(columns.target, cat, cont, [])


def add_event_days(frame: pd.DataFrame, event: str, date: str, group: str | None = None) -> pd.DataFrame:
    """Adds `days_since_EVENT` and `days_until_EVENT`: days from the last row (on or before) and to the next
    row (on or after) where `event` is true, within each `group` (e.g. a store), as the course did for
    Rossmann's promotions and holidays. Days with no such row before (after) get -1 (a value of its own, the
    course used a large number)."""
    check_columns(frame, [c for c in (event, date, group) if c])
    dates = parse_dates(frame, date)
    day_N = ((dates - pd.Timestamp("1970-01-01")).dt.days).to_numpy(np.int64)
    happened = frame[event].fillna(0).astype(bool).to_numpy()
    groups = frame[group].to_numpy() if group else np.zeros(len(frame))
    since, until = np.full(len(frame), -1, np.int64), np.full(len(frame), -1, np.int64)
    for key in pd.unique(groups):
        rows = np.flatnonzero(groups == key)
        rows = rows[np.argsort(day_N[rows], kind="stable")]
        days, hits = day_N[rows], happened[rows]
        last = None
        for r, d, h in zip(rows, days, hits):
            last = d if h else last
            since[r] = -1 if last is None else d - last
        following = None
        for r, d, h in zip(rows[::-1], days[::-1], hits[::-1]):
            following = d if h else following
            until[r] = -1 if following is None else following - d
    frame = frame.copy()
    frame[f"days_since_{event}"], frame[f"days_until_{event}"] = since, until
    return frame

