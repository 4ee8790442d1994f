"""Tables for the structured-data lesson: a CSV read with pandas (or from plotnine's wheel), the kinds of its
columns (given or inferred), the checks that turn a bad value into a one-line error, and the rows of a frame
as plain values (what a prediction returns).

Rows are named by their 0-based position in the CSV after the header ("row 5" is the file's 7th line).
"""

import dataclasses
import io
import os
import zipfile

import numpy as np
import pandas as pd

from research.core.errors import InputError

# plotnine's wheel (scripts/setup.sh downloads it) ships small CSVs: txhousing, penguins, ...
PLOTNINE_WHEEL = "plotnine-0.15.9-py3-none-any.whl"


def wheel_dir() -> str:
    return os.path.join(os.environ.get("FASTJAX_CACHE", os.path.expanduser("~/.cache/fastjax")), "wheels")


def read_wheel_csv(name: str) -> pd.DataFrame:
    """plotnine/data/NAME.csv read from plotnine's wheel in place (zipfile), e.g. "txhousing", "penguins"."""
    wheel = os.path.join(wheel_dir(), PLOTNINE_WHEEL)
    if not os.path.exists(wheel):
        raise InputError(f"{wheel} does not exist: run scripts/setup.sh (it downloads plotnine's wheel)")
    with zipfile.ZipFile(wheel) as archive:
        return pd.read_csv(io.BytesIO(archive.read(f"plotnine/data/{name}.csv")))



def read_csv(path: str) -> pd.DataFrame:
    if not os.path.exists(path):
        raise InputError(f"{path} does not exist")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not a readable CSV: {str(e).splitlines()[0]}") from e


# --- column kinds ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Columns:
    """Which column is the target and which are categorical, continuous and dates."""
    target: str
    cat: list[str]
    cont: list[str]
    date: list[str] = dataclasses.field(default_factory=list)


def check_columns(frame: pd.DataFrame, names, what: str = "column") -> None:
    for name in names:
        if name not in frame.columns:
            raise InputError(f"{what} {name!r} is not in the table (columns: {', '.join(map(str, frame.columns))})")


def infer_columns(frame: pd.DataFrame, target: str, cat=None, cont=None, date=None,
                  max_categories: int = 30) -> Columns:
    """The column kinds, as given, or inferred for the kinds left as None and printed: dates (datetime dtype, or
    text that parses as dates), categorical (text, booleans, or integers with at most `max_categories` values),
    continuous (the other numbers)."""
    check_columns(frame, [target], "target column")
    given = {k: list(v) for k, v in dict(cat=cat, cont=cont, date=date).items() if v is not None}
    for names in given.values():
        check_columns(frame, names)
    taken = {target, *[n for names in given.values() for n in names]}
    inferred = {"cat": [], "cont": [], "date": []}
    for name in frame.columns:
        if name in taken:
            continue
        kind = _infer_kind(frame[name], max_categories)
        if kind in given:  # this kind was given explicitly: a column left out of it is not used
            continue
        inferred[kind].append(name)
    columns = Columns(target, given.get("cat", inferred["cat"]), given.get("cont", inferred["cont"]),
                      given.get("date", inferred["date"]))
    if len(given) < 3:
        print(f"column kinds (inferred where not given): categorical {columns.cat}, continuous {columns.cont}, "
              f"date {columns.date}, target {target!r}")
    return columns


def _infer_kind(values: pd.Series, max_categories: int) -> str:
    if pd.api.types.is_datetime64_any_dtype(values):
        return "date"
    if pd.api.types.is_bool_dtype(values):
        return "cat"
    if pd.api.types.is_numeric_dtype(values):
        integral = pd.api.types.is_integer_dtype(values) or bool((values.dropna() % 1 == 0).all())
        return "cat" if integral and values.nunique() <= max_categories else "cont"
    sample = values.dropna().astype(str).head(50)
    if len(sample) and sample.str.match(r"^\d{4}-\d{1,2}-\d{1,2}").all():
        return "date"
    return "cat"



# --- checks ----------------------------------------------------------------------------------------------------

def first_row(values: pd.Series, bad) -> tuple:
    """(row, value) of the first bad entry; the row is the frame's index label, i.e. the row of the CSV as read
    (kept through splits and dropped rows)."""
    position = int(np.flatnonzero(np.asarray(bad))[0])
    return values.index[position], values.iloc[position]


def numeric_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A continuous column as float64 (NaN where empty); a value that is not a number is an InputError naming
    the column and row."""
    values = frame[column]
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(np.float64)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        row, value = first_row(values, bad)
        raise InputError(f"continuous column {column!r}: {value!r} at row {row} is not a number")
    return numbers.to_numpy(np.float64)


def check_target(frame: pd.DataFrame, target: str) -> None:
    """A missing target value is an InputError naming the column and row."""
    check_columns(frame, [target], "target column")
    missing = frame[target].isna()
    if missing.any():
        raise InputError(f"target column {target!r} is empty at row {first_row(frame[target], missing)[0]} "
                         f"({int(missing.sum())} rows in all): fill or drop those rows")



def comma_list(value) -> list[str] | None:
    """A comma-separated config value as a list (None stays None)."""
    if value is None:
        return None
    return [v.strip() for v in str(value).split(",") if v.strip()]


def frame_rows(frame: pd.DataFrame) -> list[dict]:
    """The frame's rows as dicts of plain values: missing values None, midnight timestamps as dates
    (2015-07-01), other timestamps in ISO format, float32 values as their shortest float32 text reads (as pandas
    writes them), numpy scalars as Python ones."""
    single = [c for c in frame.columns if frame[c].dtype == np.float32]
    frame = frame.assign(**{c: [float(str(v)) for v in frame[c].to_numpy()] for c in single})

    def plain(value):
        if value is None or (np.ndim(value) == 0 and pd.isna(value)):
            return None
        if isinstance(value, pd.Timestamp):
            return value.date().isoformat() if value == value.normalize() else value.isoformat()
        return value.item() if isinstance(value, np.generic) else value

    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
