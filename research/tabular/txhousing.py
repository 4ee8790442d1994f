"""Texas housing sales (ggplot2's txhousing: 46 cities x 187 months, 2000-01 to 2015-07), the default table of
the structured-data lesson, and the choices made for it on its validation months."""

import io
import urllib.request

import pandas as pd

from research.core.errors import InputError
from research.tabular.table import Columns, read_wheel_csv

# txhousing.csv ships inside plotnine's wheel, which scripts/setup.sh downloads; users without it fetch the CSV
# from ggplot2's repository.
TXHOUSING_URL = ("https://raw.githubusercontent.com/tidyverse/ggplot2/"
                 "c655e414be108797d7acaab3a96a93b407debad0/data-raw/tx-housing.csv")

COLUMNS = Columns(target="sales", cat=["city"], cont=[], date=["date"])
# Monthly rows: the day, week and weekday of the 1st of a month carry no signal (chosen on validation).
DATE_PARTS = "month,year,elapsed"
# Each city's sales 12 and 24 months before, known a year ahead (chosen on validation: 12 alone, 12+24 and
# 12+13+14 gave the net 0.1344, 0.1313 and 0.1350)
LAGS = "12,24"
LAG_GROUP = "city"


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


def read(target: str = "") -> tuple[pd.DataFrame, Columns]:
    """The table without its rows that have no `target` (default `sales`; printed), and its column kinds."""
    frame = read_txhousing()
    target = target or COLUMNS.target
    missing = frame[target].isna()
    print(f"txhousing: {int(missing.sum())} of {len(frame)} rows have no {target!r}, dropped")
    return frame[~missing], Columns(target, COLUMNS.cat, COLUMNS.cont, COLUMNS.date)
