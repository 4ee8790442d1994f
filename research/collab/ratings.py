"""User-item ratings for collaborative filtering: MovieLens-100k (offline from recbole's wheel, else GroupLens)
or any ratings CSV, the user/item index maps, and a run's training and validation ratings as its config asks
(`load`; the splits are research/collab/splits.py's).

MovieLens-100k: the 100,000 ratings (943 users, 1,682 movies, 1-5 stars) of GroupLens's `u.data`. recbole's
wheel ships them as `ml-100k.inter` in u.data's own row order (checked: its first rows are u.data's), so the
u1-u5 folds are computed as GroupLens's `mku.sh` does: fold k tests on rows 20000 (k-1) .. 20000 k of u.data
and trains on the other 80,000 (u1.test starts 1/6/5, 1/10/3, 1/12/5 as GroupLens's file does).

Index maps are fitted on the training ratings only: index 0 of users and of items is reserved for ids the
training split never saw, and the models send it down the global-mean path (no factor, no bias of its own).
"""

import dataclasses
import hashlib
import io
import os
import urllib.request
import zipfile
from typing import NamedTuple

import ml_collections
import numpy as np
import pandas as pd

from research.collab import splits
from research.core import inference
from research.core.errors import InputError

RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_DIR = "recbole/dataset_example/ml-100k"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"  # TFDS's checksum
UNKNOWN = 0  # the index of a user or item that the training split does not have


def cache_dir() -> str:
    return os.environ.get("FASTJAX_CACHE", os.path.expanduser("~/.cache/fastjax"))


# --- reading ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Ratings:
    """Ratings in their file's row order: `frame` has columns user, item (ids as strings), rating (float) and
    timestamp (float, NaN when the data has none); `titles` maps item id -> title where the data has one."""
    frame: pd.DataFrame
    titles: dict[str, str]
    source: str


def read_movielens_100k() -> Ratings:
    """MovieLens-100k from recbole's wheel (scripts/setup.sh downloads it), else from GroupLens (SHA-256
    checked, cached)."""
    wheel = os.path.join(cache_dir(), "wheels", RECBOLE_WHEEL)
    if os.path.exists(wheel):
        with zipfile.ZipFile(wheel) as archive:
            inter = _read_recbole(archive.read(f"{RECBOLE_DIR}/ml-100k.inter"), f"{wheel}:ml-100k.inter")
            items = _read_recbole(archive.read(f"{RECBOLE_DIR}/ml-100k.item"), f"{wheel}:ml-100k.item")
        frame = pd.DataFrame({"user": inter["user_id"], "item": inter["item_id"],
                              "rating": inter["rating"].astype(float), "timestamp": inter["timestamp"].astype(float)})
        titles = {i: f"{t} ({y})" if y else t for i, t, y in
                  zip(items["item_id"], items["movie_title"], items["release_year"].fillna(""))}
        return Ratings(frame, titles, wheel)
    return _read_grouplens(_download_grouplens())


def _read_recbole(raw: bytes, name: str) -> pd.DataFrame:
    """A recbole atomic file: tab-separated, headers typed as `name:type`; every column read as a string."""
    frame = pd.read_csv(io.BytesIO(raw), sep="\t", dtype=str, keep_default_na=False, na_values=[""],
                        encoding="latin-1")
    frame.columns = [c.split(":")[0] for c in frame.columns]
    if frame.empty:
        raise InputError(f"{name} holds no rows")
    return frame


def _download_grouplens() -> str:
    path = os.path.join(cache_dir(), "ml-100k.zip")
    if not os.path.exists(path):
        os.makedirs(cache_dir(), exist_ok=True)
        try:
            with urllib.request.urlopen(GROUPLENS_URL, timeout=60) as response:
                raw = response.read()
        except OSError as e:
            raise InputError(f"MovieLens-100k: no {RECBOLE_WHEEL} in {cache_dir()}/wheels (run scripts/setup.sh) "
                             f"and {GROUPLENS_URL} is unreachable ({e})") from None
        if hashlib.sha256(raw).hexdigest() != GROUPLENS_SHA256:
            raise InputError(f"{GROUPLENS_URL}: SHA-256 does not match {GROUPLENS_SHA256}")
        with open(path + ".tmp", "wb") as f:
            f.write(raw)
        os.replace(path + ".tmp", path)
    return path


def _read_grouplens(path: str) -> Ratings:
    with zipfile.ZipFile(path) as archive:
        data = pd.read_csv(io.BytesIO(archive.read("ml-100k/u.data")), sep="\t", header=None, dtype=str,
                           names=["user", "item", "rating", "timestamp"])
        items = pd.read_csv(io.BytesIO(archive.read("ml-100k/u.item")), sep="|", header=None, dtype=str,
                            encoding="latin-1", usecols=[0, 1])
    frame = data.assign(rating=data["rating"].astype(float), timestamp=data["timestamp"].astype(float))
    return Ratings(frame, dict(zip(items[0], items[1])), path)


def read_ratings_csv(path: str, user: str = "user", item: str = "item", rating: str = "rating",
                     timestamp: str = "", titles_path: str = "", title: str = "title") -> Ratings:
    """Any CSV of ratings with named user, item and rating columns (and an optional timestamp: numbers, or
    dates pandas can parse). `titles_path`: an optional CSV with the item column and a `title` column."""
    if not os.path.exists(path):
        raise InputError(f"{path} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise InputError(f"{path} is not a readable CSV ({str(e).splitlines()[0]})") from None
    for column in [user, item, rating] + ([timestamp] if timestamp else []):
        if column not in table.columns:
            raise InputError(f"{path} has no column {column!r} (columns: {', '.join(table.columns)})")
    for column in (user, item):
        if table[column].isna().any():
            row = int(np.flatnonzero(table[column].isna().to_numpy())[0])
            raise InputError(f"{path}: column {column!r} is empty in data row {row + 1}")
    ratings = pd.to_numeric(table[rating], errors="coerce")
    bad = ratings.isna() | ~np.isfinite(ratings)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path}: column {rating!r} has a non-numeric rating {table[rating].iloc[row]!r} "
                         f"in data row {row + 1}")
    times = np.full(len(table), np.nan)
    if timestamp:
        times = _timestamps(path, table[timestamp], timestamp)
    frame = pd.DataFrame({"user": table[user].to_numpy(), "item": table[item].to_numpy(),
                          "rating": ratings.to_numpy(float), "timestamp": times})
    if frame.empty:
        raise InputError(f"{path} holds no ratings")
    names = {}
    if titles_path:
        names = read_titles(titles_path, item, title)
    return Ratings(frame, names, path)


def _timestamps(path: str, values: pd.Series, column: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(float)
    dates = pd.to_datetime(values, errors="coerce")
    if dates.isna().any():
        row = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise InputError(f"{path}: column {column!r} has {values.iloc[row]!r} in data row {row + 1}, "
                         f"neither a number nor a date")
    return (dates - pd.Timestamp(0)).dt.total_seconds().to_numpy(float)


def read_titles(path: str, item: str = "item", title: str = "title") -> dict[str, str]:
    if not os.path.exists(path):
        raise InputError(f"{path} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in (item, title):
        if column not in table.columns:
            raise InputError(f"{path} has no column {column!r} (columns: {', '.join(table.columns)})")
    return dict(zip(table[item], table[title]))


# --- index maps ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class IndexMaps:
    """User and item ids of the training ratings -> indices 1..n (0: unseen in training), the training mean
    rating and range, and titles; saved with a run for predictions."""
    users: list[str]
    items: list[str]
    mean_rating: float
    min_rating: float
    max_rating: float
    titles: dict[str, str]

    @classmethod
    def fit(cls, train: pd.DataFrame, titles: dict[str, str]) -> "IndexMaps":
        users, items = sorted(set(train["user"])), sorted(set(train["item"]))
        known = set(items)
        return cls(users, items, float(train["rating"].mean()), float(train["rating"].min()),
                   float(train["rating"].max()), {i: t for i, t in titles.items() if i in known})

    @property
    def num_users(self) -> int:
        """Rows of the user table, the unseen index 0 included."""
        return len(self.users) + 1

    @property
    def num_items(self) -> int:
        return len(self.items) + 1

    def user_index(self, ids) -> np.ndarray:
        lookup = {u: k + 1 for k, u in enumerate(self.users)}
        return np.array([lookup.get(str(u), UNKNOWN) for u in ids], np.int32)

    def item_index(self, ids) -> np.ndarray:
        lookup = {i: k + 1 for k, i in enumerate(self.items)}
        return np.array([lookup.get(str(i), UNKNOWN) for i in ids], np.int32)

    def arrays(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """{"user", "item": int32 indices, "target": float32 ratings}."""
        return {"user": self.user_index(frame["user"]), "item": self.item_index(frame["item"]),
                "target": frame["rating"].to_numpy(np.float32)}

    def title(self, item_id: str) -> str:
        return self.titles.get(item_id, item_id)

    def save(self, path: str) -> None:
        inference.save_record(path, self)

    @classmethod
    def load(cls, path: str) -> "IndexMaps":
        return inference.load_record(cls, path)


# --- a run's ratings -------------------------------------------------------------------------------------------

class RatingsData(NamedTuple):
    maps: IndexMaps
    train: dict  # user, item (int32 indices), target (float32)
    valid: dict
    source: str

    def info(self) -> dict:
        """What results.json records about the data."""
        return {"source": self.source, "train": len(self.train["target"]), "valid": len(self.valid["target"])}


def read(d: ml_collections.ConfigDict) -> Ratings:
    """The ratings `config.data` names: MovieLens-100k when `path` is empty, else the CSV at `path`."""
    if not d.path:
        return read_movielens_100k()
    return read_ratings_csv(d.path, d.user, d.item, d.rating, d.timestamp, d.titles, "title")


def load(config: ml_collections.ConfigDict) -> RatingsData:
    """The config's ratings split into training and validation arrays, indexed by maps fitted on training."""
    ratings = read(config.data)
    split = splits.split_rows(config.data, ratings.frame, ratings.source)
    train_frame = ratings.frame[split == 0]
    maps = IndexMaps.fit(train_frame, ratings.titles)
    valid = maps.arrays(ratings.frame[split == 1])
    print(f"{ratings.source}: {int((split == 0).sum())} training, {len(valid['target'])} validation ratings; "
          f"{len(maps.users)} users, {len(maps.items)} items; validation rows with a user or item unseen in "
          f"training: {int(np.sum((valid['user'] == 0) | (valid['item'] == 0)))}")
    return RatingsData(maps, maps.arrays(train_frame), valid, ratings.source)
