"""The preprocessing of a table, fitted on the training rows only and saved as JSON with the run, and the numpy
arrays the model sees.

The rules (fastai's tabular procs, as the 2018 course used them on Rossmann):
- categorical column -> index 1..n over the categories seen in training; 0 is "unknown" (unseen or missing);
- continuous column -> missing values filled with the training median, plus a categorical `COLUMN_na` indicator
  when training had missing values there; then (x - training mean) / training std, or with `scaling="robust"`
  (x - training median) / (interquartile range / 1.349) (the std if that is 0), and with `smooth_clip`
  x / sqrt(1 + (x / 3)^2), which leaves typical values nearly as they are and bounds outliers within +-3
  (RealMLP's robust scaling and smooth clipping, Holzmuller et al. 2024); with `num_bins`, each scaled
  column's training quantiles are kept as the edges of its piecewise-linear embedding;
- date column -> its parts (`dates.DATE_CAT_PARTS`, `dates.DATE_CONT_PARTS`), before fitting; parts constant
  over the training rows are dropped.
"""

import dataclasses

import numpy as np
import pandas as pd

from research.core import inference
from research.tabular.numeric_embeddings import quantile_edges
from research.core.errors import InputError
from research.tabular.dates import expand_dates
from research.tabular.table import Columns, check_columns, check_target, first_row, numeric_column

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
    smooth_clip: bool = False
    bin_edges: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # scaled units; {} without

    @property
    def numeric_edges(self) -> list[list[float]] | None:
        """Each continuous input's bin edges (scaled units), in input order; None without embeddings."""
        return [self.bin_edges[c] for c in self.cont_names] if self.bin_edges and self.cont_names else None

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
            cont.append(self.scale(c, values))
        num_rows = len(frame)
        arrays = {"cat": np.stack(cat, 1).astype(np.int32) if cat else np.zeros((num_rows, 0), np.int32),
                  "cont": np.stack(cont, 1).astype(np.float32) if cont else np.zeros((num_rows, 0), np.float32)}
        if with_target:
            arrays["target"] = self.encode_target(frame)
        return arrays

    def scale(self, column: str, values_N: np.ndarray) -> np.ndarray:
        """A continuous column's filled (and range-clipped) values in model units."""
        scaled_N = (values_N - self.means[column]) / self.stds[column]
        return scaled_N / np.sqrt(1.0 + (scaled_N / 3.0) ** 2) if self.smooth_clip else scaled_N

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
        inference.save_record(path, self)

    @classmethod
    def load(cls, path: str) -> "Preprocessing":
        return inference.load_record(cls, path)


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
                      date_parts=None, clip: bool = False, scaling: str = "standard", smooth_clip: bool = False,
                      num_bins: int = 0) -> Preprocessing:
    """The preprocessing fitted on the `train` rows only: date columns expanded into parts, then categories,
    medians, indicators, means and standard deviations. Categorical and continuous columns that are constant
    over the training rows are dropped (they carry nothing) and printed. `date_parts`: which parts of each date
    to use (None: all). `clip`: clip continuous values to their training range when applied. `scaling`
    ("standard" or "robust"), `smooth_clip` and `num_bins` (0: no bin edges): the continuous columns' model
    units, as the module docstring says."""
    if task not in ("regression", "classification"):
        raise InputError(f"data.task={task!r}: use 'regression' or 'classification'")
    if scaling not in ("standard", "robust"):
        raise InputError(f"data.scaling={scaling!r}: use 'standard' or 'robust'")
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
        if scaling == "robust":
            low, high = np.quantile(filled, [0.25, 0.75])
            means[c], stds[c] = medians[c], float(high - low) / 1.349 or stds[c]
        mins[c], maxs[c] = float(filled.min()), float(filled.max())
    if dropped:
        print(f"constant over the training rows, not used: {dropped}")
    prep = Preprocessing(columns.target, task, log_target, categories, medians, indicators, means, stds,
                         date_columns=date_columns, clip=clip, mins=mins, maxs=maxs, smooth_clip=smooth_clip)
    for c in prep.cont_names if num_bins else ():
        values = numeric_column(train, c)
        scaled = prep.scale(c, np.clip(np.where(np.isnan(values), medians[c], values), mins[c], maxs[c]))
        prep.bin_edges[c] = quantile_edges(scaled, num_bins)
    if task == "classification":
        prep.classes = category_names(train[columns.target])
        if len(prep.classes) < 2:
            raise InputError(f"target column {columns.target!r} has {len(prep.classes)} class in training: need 2+")
    else:
        target_N = prep.encode_target(train)
        prep.target_range = [float(target_N.min()), float(target_N.max())]
    return prep
