"""Tables for the structured-data lesson: a CSV read with pandas, preprocessing fitted on the training rows only
and saved as JSON with the run, and the numpy arrays the model sees.

The rules (fastai's tabular procs, as the 2018 course used them on Rossmann):
- categorical column -> index 1..n over the categories seen in training; 0 is "unknown" (unseen or missing);
- continuous column -> missing values filled with the training median, plus a categorical `COLUMN_na` indicator
  when training had missing values there; then (x - training mean) / training std;
- date column -> its parts (`date_parts`), before fitting; parts constant over the training rows are dropped;
- optional "days since / until" an event (`add_event_days`), before fitting.

Rows are named by their 0-based position in the CSV after the header ("row 5" is the file's 7th line).
"""

import dataclasses
import io
import json
import os
import urllib.request
import zipfile

import numpy as np
import pandas as pd

from research.core.errors import InputError

# txhousing.csv (Texas housing sales by city and month, from ggplot2) ships inside plotnine's wheel, which
# scripts/setup.sh downloads; users without it fetch the CSV from ggplot2's repository.
PLOTNINE_WHEEL = "plotnine-0.15.9-py3-none-any.whl"
TXHOUSING_URL = ("https://raw.githubusercontent.com/tidyverse/ggplot2/"
                 "c655e414be108797d7acaab3a96a93b407debad0/data-raw/tx-housing.csv")


def wheel_dir() -> str:
    return os.path.join(os.environ.get("FASTJAX_CACHE", os.path.expanduser("~/.cache/fastjax")), "wheels")


def read_wheel_csv(name: str) -> pd.DataFrame:
    """plotnine/data/NAME.csv read from plotnine's wheel in place (zipfile), e.g. "txhousing", "penguins"."""
    wheel = os.path.join(wheel_dir(), PLOTNINE_WHEEL)
    if not os.path.exists(wheel):
        raise InputError(f"{wheel} does not exist: run scripts/setup.sh (it downloads plotnine's wheel)")
    with zipfile.ZipFile(wheel) as archive:
        return pd.read_csv(io.BytesIO(archive.read(f"plotnine/data/{name}.csv")))


def read_txhousing() -> pd.DataFrame:
    """txhousing with a `date` column (the first of each month) in place of plotnine's fractional year; read
    from plotnine's wheel, else downloaded from ggplot2's repository."""
    try:
        frame = read_wheel_csv("txhousing")
    except InputError:
        with urllib.request.urlopen(TXHOUSING_URL, timeout=60) as response:
            frame = pd.read_csv(io.BytesIO(response.read()))
    frame = frame.drop(columns=["date"], errors="ignore")
    frame["date"] = pd.to_datetime(dict(year=frame["year"], month=frame["month"], day=1))
    return frame


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


# --- dates and events ------------------------------------------------------------------------------------------

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


# --- validation split ------------------------------------------------------------------------------------------

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


# --- fitted preprocessing --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Preprocessing:
    """Everything fitted on the training rows; `arrays(frame)` applies it to any rows (training, validation,
    new rows at prediction time). Saved and loaded as JSON."""
    target: str
    task: str  # "regression" or "classification"
    log_target: bool
    categories: dict[str, list[str]]  # categorical column -> its training categories (index i + 1)
    medians: dict[str, float]  # continuous column -> training median (missing values are filled with it)
    indicators: list[str]  # continuous columns that get a COLUMN_na categorical indicator
    means: dict[str, float]
    stds: dict[str, float]
    classes: list[str] = dataclasses.field(default_factory=list)  # classification: the target's classes
    target_range: list[float] = dataclasses.field(default_factory=list)  # regression: min, max (model units)
    date_columns: list[str] = dataclasses.field(default_factory=list)  # expanded into parts before these rules
    # With clip: continuous values outside [training min, max] are clipped to it, so a net meets no input it
    # would have to extrapolate to (trees never extrapolate; e.g. dates after the training period).
    clip: bool = False
    mins: dict[str, float] = dataclasses.field(default_factory=dict)
    maxs: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def cat_names(self) -> list[str]:
        """The model's categorical inputs, in order: the columns, then the missing-value indicators."""
        return list(self.categories) + [f"{c}_na" for c in self.indicators]

    @property
    def cont_names(self) -> list[str]:
        return list(self.means)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding rows per categorical input: its categories plus the unknown index 0."""
        return [len(v) + 1 for v in self.categories.values()] + [3] * len(self.indicators)

    def arrays(self, frame: pd.DataFrame, with_target: bool = True) -> dict[str, np.ndarray]:
        """{"cat": N x C int32 indices, "cont": N x F float32, "target": N float32 (model units) or int32} of
        rows as read (date columns not yet expanded)."""
        if self.date_columns:
            frame, _ = expand_dates(frame, Columns(self.target, [], [], self.date_columns))
        check_columns(frame, list(self.categories) + self.cont_names)
        cat = [encode_categories(frame[c], self.categories[c]) for c in self.categories]
        cont = []
        for c in self.cont_names:
            values = numeric_column(frame, c)
            missing = np.isnan(values)
            if c in self.indicators:
                cat.append(np.where(missing, 2, 1).astype(np.int32))  # 1: present, 2: was missing
            values = np.where(missing, self.medians[c], values)
            if self.clip:
                values = np.clip(values, self.mins[c], self.maxs[c])
            cont.append((values - self.means[c]) / self.stds[c])
        num_rows = len(frame)
        arrays = {"cat": np.stack(cat, 1).astype(np.int32) if cat else np.zeros((num_rows, 0), np.int32),
                  "cont": np.stack(cont, 1).astype(np.float32) if cont else np.zeros((num_rows, 0), np.float32)}
        if with_target:
            arrays["target"] = self.encode_target(frame)
        return arrays

    def encode_target(self, frame: pd.DataFrame) -> np.ndarray:
        check_target(frame, self.target)
        if self.task == "classification":
            values = frame[self.target].astype(str)
            index = {c: i for i, c in enumerate(self.classes)}
            unseen = ~values.isin(list(index))
            if unseen.any():
                row, value = first_row(values, unseen)
                raise InputError(f"target column {self.target!r}: class {value!r} at row {row} "
                                 f"is not among the training classes {self.classes}")
            return values.map(index).to_numpy(np.int32)
        values = numeric_column(frame, self.target)
        if self.log_target:
            if (values <= 0).any():
                row, value = first_row(frame[self.target], values <= 0)
                raise InputError(f"target column {self.target!r}: {value} at row {row} is not positive, "
                                 f"so it has no log (set data.log_target=False)")
            values = np.log(values)
        return values.astype(np.float32)

    def to_original_units(self, predictions_N: np.ndarray) -> np.ndarray:
        return np.exp(predictions_N) if self.log_target else predictions_N

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=1)

    @classmethod
    def load(cls, path: str) -> "Preprocessing":
        if not os.path.exists(path):
            raise InputError(f"{path} does not exist: train the run first")
        with open(path) as f:
            return cls(**json.load(f))


def category_names(values: pd.Series) -> list[str]:
    """The sorted distinct non-missing values, as text (so JSON keeps them exactly)."""
    present = values.dropna()
    try:
        ordered = sorted(pd.unique(present))
    except TypeError:  # mixed types
        ordered = sorted(pd.unique(present.astype(str)))
    return [_as_text(v) for v in ordered]


def _as_text(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))  # 3.0 and 3 are the same category (a column with missing values reads as float)
    return str(value)


def encode_categories(values: pd.Series, categories: list[str]) -> np.ndarray:
    """Index i + 1 of each value in `categories`; 0 for missing or unseen values."""
    index = {c: i + 1 for i, c in enumerate(categories)}
    return np.array([0 if pd.isna(v) else index.get(_as_text(v), 0) for v in values], np.int32)


def fit_preprocessing(train: pd.DataFrame, columns: Columns, task: str = "regression", log_target: bool = False,
                      date_parts=None, clip: bool = False) -> Preprocessing:
    """The preprocessing fitted on the `train` rows only: date columns expanded into parts, then categories,
    medians, indicators, means and standard deviations. Categorical and continuous columns that are constant
    over the training rows are dropped (they carry nothing) and printed. `date_parts`: which parts of each date
    to use (None: all). `clip`: clip continuous values to their training range when applied."""
    if task not in ("regression", "classification"):
        raise InputError(f"data.task={task!r}: use 'regression' or 'classification'")
    date_columns = list(columns.date)
    train, columns = expand_dates(train, columns, date_parts)
    check_columns(train, [columns.target, *columns.cat, *columns.cont])
    check_target(train, columns.target)
    categories, medians, indicators, means, stds, mins, maxs, dropped = {}, {}, [], {}, {}, {}, {}, []
    for c in columns.cat:
        names = category_names(train[c])
        if len(names) <= 1 and not train[c].isna().any():
            dropped.append(c)
        else:
            categories[c] = names
    for c in columns.cont:
        values = numeric_column(train, c)
        missing = np.isnan(values)
        if missing.all() or (np.nanstd(values) == 0 and not missing.any()):
            dropped.append(c)
            continue
        medians[c] = float(np.nanmedian(values))
        if missing.any():
            indicators.append(c)
        filled = np.where(missing, medians[c], values)
        means[c], stds[c] = float(filled.mean()), float(filled.std()) or 1.0
        mins[c], maxs[c] = float(filled.min()), float(filled.max())
    if dropped:
        print(f"constant over the training rows, not used: {dropped}")
    prep = Preprocessing(columns.target, task, log_target, categories, medians, indicators, means, stds,
                         date_columns=date_columns, clip=clip, mins=mins, maxs=maxs)
    if task == "classification":
        prep.classes = category_names(train[columns.target])
        if len(prep.classes) < 2:
            raise InputError(f"target column {columns.target!r} has {len(prep.classes)} class in training: need 2+")
    else:
        target_N = prep.encode_target(train)
        prep.target_range = [float(target_N.min()), float(target_N.max())]
    return prep
