"""Kaggle's Rossmann store sales (train, store, store_states, state_names, googletrend, weather CSVs in one
directory) joined and featured as the 2018 course did, and the columns its net used."""

import os

import pandas as pd

from research.core.errors import InputError
from research.tabular.dates import add_event_days
from research.tabular.table import read_csv

CAT = ["Store", "DayOfWeek", "StateHoliday", "CompetitionMonthsOpen", "Promo2Weeks", "StoreType",
       "Assortment", "PromoInterval", "CompetitionOpenSinceYear", "Promo2SinceYear", "State", "Events",
       "Promo", "SchoolHoliday"]
CONT = ["CompetitionDistance", "Max_TemperatureC", "Mean_TemperatureC", "Min_TemperatureC",
        "Max_Humidity", "Mean_Humidity", "Min_Humidity", "Max_Wind_SpeedKm_h", "Mean_Wind_SpeedKm_h",
        "CloudCover", "trend", "trend_DE", "days_since_Promo", "days_until_Promo",
        "days_since_StateHoliday", "days_until_StateHoliday", "days_since_SchoolHoliday",
        "days_until_SchoolHoliday"]


def read(directory: str, new_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Kaggle's Rossmann training rows joined and featured as the 2018 course did: stores, states, weather
    (by state name and date), Google trends (by state and week, and Germany's; the week that contains the
    day), competition months open and promo2 weeks (clipped), days since/until promotions and holidays per
    store; closed days and zero sales dropped. (The course's 7-day rolling counts of those events are left out.)

    With `new_rows` (test.csv's layout: no Sales), those rows joined and featured the same way, their days
    since/until events counted over the training history and themselves."""
    read_file = lambda name: read_csv(os.path.join(directory, f"{name}.csv"))
    train, store = read_file("train"), read_file("store")
    store_states, state_names = read_file("store_states"), read_file("state_names")
    googletrend, weather = read_file("googletrend"), read_file("weather")
    train["new_row"] = False
    if new_rows is not None:
        train = pd.concat([train, new_rows.assign(new_row=True)], ignore_index=True)
    train["StateHoliday"] = train["StateHoliday"].astype(str) != "0"
    train["Date"] = pd.to_datetime(train["Date"])
    weather = weather.merge(state_names, how="left", left_on="file", right_on="StateName")
    weather["Date"] = pd.to_datetime(weather["Date"])
    googletrend["Date"] = pd.to_datetime(googletrend["week"].str.split(" - ", expand=True)[0])
    googletrend["State"] = googletrend["file"].str.split("_", expand=True)[2]
    googletrend.loc[googletrend["State"] == "NI", "State"] = "HB,NI"
    googletrend = googletrend.rename(columns={"Date": "TrendWeek"})  # a week's Sunday
    trend_de = googletrend[googletrend["file"] == "Rossmann_DE"][["TrendWeek", "trend"]]
    trend_de = trend_de.rename(columns={"trend": "trend_DE"})

    frame = train.merge(store.merge(store_states, how="left", on="Store"), how="left", on="Store")
    # Google's weekly trends run Sunday to Saturday: each day gets the trend of the week that contains it.
    frame["TrendWeek"] = frame["Date"] - pd.to_timedelta((frame["Date"].dt.day_of_week + 1) % 7, unit="D")
    frame = frame.merge(weather.drop(columns=["file", "StateName"]), how="left", on=["State", "Date"])
    frame = frame.merge(googletrend[["State", "TrendWeek", "trend"]], how="left", on=["State", "TrendWeek"])
    frame = frame.merge(trend_de, how="left", on="TrendWeek")

    competition_since = pd.to_datetime(dict(
        year=frame["CompetitionOpenSinceYear"].fillna(1900).astype(int),
        month=frame["CompetitionOpenSinceMonth"].fillna(1).astype(int), day=15))
    days_open = (frame["Date"] - competition_since).dt.days.clip(lower=0)
    frame["CompetitionMonthsOpen"] = (days_open // 30).clip(upper=24)
    promo2_since = pd.to_datetime(
        frame["Promo2SinceYear"].fillna(1900).astype(int).astype(str) + "-"
        + frame["Promo2SinceWeek"].fillna(1).astype(int).astype(str) + "-1", format="%G-%V-%u")
    frame["Promo2Weeks"] = ((frame["Date"] - promo2_since).dt.days.clip(lower=0) // 7).clip(upper=25)
    for event in ("Promo", "StateHoliday", "SchoolHoliday"):
        frame = add_event_days(frame, event, "Date", "Store")
    if new_rows is not None:
        frame = frame[frame["new_row"]]
    else:
        frame = frame[(frame["Open"] != 0) & (frame["Sales"] > 0)]
    return frame.drop(columns=["Customers", "Open", "TrendWeek", "new_row"], errors="ignore").reset_index(drop=True)


def read_new_rows(directory: str, input_path: str) -> pd.DataFrame:
    """New Rossmann rows (Kaggle's test.csv layout) joined and featured like the training rows."""
    if not directory:
        raise InputError("the rossmann run's config has no data.path (the directory of Kaggle's CSVs)")
    return read(directory, read_csv(input_path))
