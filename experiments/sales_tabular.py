"""Lesson 3, structured data: entity embeddings for any table, trained beside the tree baselines
(HistGradientBoosting, RandomForest) on the same split and features.

Default: Texas housing sales (txhousing.csv from plotnine's wheel: 46 cities x 187 months, 2000-01 to 2015-07).
The target is `sales`, the number of homes sold in a city in a month: Rossmann's sales per store-day becomes
sales per city-month (`volume` is the dollar value of those same sales, i.e. the target times a price, so it is
left out with the other same-month market figures; the model sees the city and the date, as Rossmann's net saw
the store and the date). Trained on log(sales) with a scaled sigmoid y_range, validated on the last 12 months
(2014-08 to 2015-07) by exp-RMSPE, as Rossmann was on its last weeks. The 568 rows with no sales figure are
dropped (printed).

Run:
  .venv/bin/python scripts/train.py --config experiments/sales_tabular.py --workdir runs/sales_tabular
Your own table, no code (column kinds are inferred and printed when left out; the split is the last
data.valid_months of the first date column, else a random data.valid_fraction):
  .venv/bin/python scripts/train.py --config experiments/sales_tabular.py --workdir runs/mine \\
      --config.data.path=file.csv --config.data.target=COLUMN [--config.data.cat=a,b --config.data.cont=c,d \\
      --config.data.date=e --config.data.task=classification --config.data.valid_by=random]
Kaggle's Rossmann CSVs (train, store, store_states, state_names, googletrend, weather) in a directory:
  .venv/bin/python scripts/train.py --config experiments/sales_tabular.py:rossmann --workdir runs/rossmann \\
      --config.data.path=DIR
Predict for new rows with the trained run (the saved preprocessing; a CSV with the training columns):
  .venv/bin/python scripts/predict.py --workdir runs/sales_tabular --input new_rows.csv --output predictions.csv

Reaches (default preset, idle 2-core CPU, 108 s for the whole command): validation exp-RMSPE 0.1311 for the net,
an ensemble of 5 (each 40 epochs at lr 1e-2, inputs clipped to the training range, each city's log sales 12 and
24 months before as inputs; the members alone 0.1357 on average), HistGradientBoosting 0.1316 and RandomForest
0.1550 on the same split and features.
"""

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd

from research.core import configs, evaluation, experiment, inference, sharding, steps
from research.core.arrays import ArrayBatches
from research.core.errors import InputError
from research.core.train_state import TrainState
from research.tabular import (baselines as tabular_baselines, interpret as tabular_interpret, table as tabular, task as tabular_task)
from research.tabular.model import TabularModel

TXHOUSING = tabular.Columns(target="sales", cat=["city"], cont=[], date=["date"])
# Monthly rows: the day, week and weekday of the 1st of a month carry no signal (chosen on validation).
TXHOUSING_DATE_PARTS = "month,year,elapsed"
# Each city's sales 12 and 24 months before, known a year ahead (chosen on validation: 12 alone, 12+24 and
# 12+13+14 gave the net 0.1344, 0.1313 and 0.1350)
TXHOUSING_LAGS = "12,24"

ROSSMANN_CAT = ["Store", "DayOfWeek", "StateHoliday", "CompetitionMonthsOpen", "Promo2Weeks", "StoreType",
                "Assortment", "PromoInterval", "CompetitionOpenSinceYear", "Promo2SinceYear", "State", "Events",
                "Promo", "SchoolHoliday"]
ROSSMANN_CONT = ["CompetitionDistance", "Max_TemperatureC", "Mean_TemperatureC", "Min_TemperatureC",
                 "Max_Humidity", "Mean_Humidity", "Min_Humidity", "Max_Wind_SpeedKm_h", "Mean_Wind_SpeedKm_h",
                 "CloudCover", "trend", "trend_DE", "days_since_Promo", "days_until_Promo",
                 "days_since_StateHoliday", "days_until_StateHoliday", "days_since_SchoolHoliday",
                 "days_until_SchoolHoliday"]


def get_config(preset: str = "txhousing") -> ml_collections.ConfigDict:
    configs.check_preset(preset, ("txhousing", "rossmann"), "experiments/sales_tabular.py")
    c = configs.base()
    placeholder = ml_collections.config_dict.placeholder
    c.data = ml_collections.ConfigDict(dict(
        path="",  # "" = the bundled txhousing table; else a CSV file (rossmann: the directory of Kaggle's CSVs)
        rossmann=False,
        target="",  # the column to predict ("" = txhousing's `sales`)
        task="",  # "regression" or "classification"; "" = classification for a text/boolean target, else regression
        log_target=placeholder(bool),  # regression on log(target); None = when every training target is positive
        cat=placeholder(str), cont=placeholder(str), date=placeholder(str),  # comma-separated; None = inferred
        max_categories=30,  # inference: integer columns with at most this many values are categorical
        date_parts=placeholder(str),  # comma-separated parts of each date to use (research/data/tabular.py); None = all
        # continuous inputs clipped to the training rows' range: no extrapolation of the trend into the validation
        # months (on txhousing, 4 seeds: exp-RMSPE 0.1406 +- 0.004 with 40 epochs, against 0.152 +- 0.015 without)
        clip_to_training_range=True,
        events="",  # comma-separated boolean columns that get days_since_/days_until_ features (needs a date)
        # the target's own history as inputs: comma-separated lags in lag_unit ("months" or "days") within each
        # lag_group, e.g. "12,24"; each at least as long as the validation (and test) period (no leak).
        # None: txhousing's TXHOUSING_LAGS by city, no lags for your own table
        target_lags=placeholder(str), lag_unit="months", lag_group=placeholder(str),
        event_group="",  # the column within which those days are counted (e.g. a store)
        valid_by="",  # "date" (the last valid_months), "column" (valid_column), "random"; "" = date if there is one
        valid_months=12, valid_days=0,  # valid_days > 0 replaces valid_months
        test_months=0,  # > 0: the last test_months are a test period scored once; validation is just before
        valid_column="", valid_fraction=0.2, test_fraction=0.0))
    c.model = ml_collections.ConfigDict(dict(hidden=(1000, 500), dropouts=(0.001, 0.01), embedding_dropout=0.04,
                                             y_range_margin=0.2))  # y_range: the training range widened by this
    c.learning_rate = 1e-2  # chosen on txhousing's validation months (0 runs the range test; it suggested 1e-4)
    c.batch_size = 64
    c.eval_batch_size = 512
    c.num_epochs = 40
    c.optimizer.weight_decay = 0.2
    c.checkpoint.every_epochs = 5
    c.log_every = 100
    # the net is an ensemble of this many members, the runs with seeds seed .. seed + ensemble - 1 (own
    # initialisation, data order and dropout), each trained and checkpointed in workdir/member_K; predictions
    # averaged (model units; class probabilities). On txhousing validation: 1 member 0.1313 (seeds 1-3:
    # 0.1322, 0.1359, 0.1409), 5 members 0.1311
    c.ensemble = 5
    c.baselines = True
    c.interpret = True
    if preset == "rossmann":
        c.data.update(rossmann=True, target="Sales", valid_days=48, valid_by="date", log_target=True,
                      task="regression")
        c.batch_size = 512
        c.eval_batch_size = 2048
        c.num_epochs = 3
        c.learning_rate = 1e-3  # the course's rate for Rossmann
        c.ensemble = 1
        c.checkpoint.every_epochs = 1
    return c


# --- data ------------------------------------------------------------------------------------------------------

class TableData(NamedTuple):
    """The fitted preprocessing and the arrays of each split (test None without a test split)."""
    prep: tabular.Preprocessing
    train: dict
    valid: dict
    test: dict | None = None


def _names(value) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in str(value).split(",") if v.strip()]


def read_table(d: ml_collections.ConfigDict) -> tuple[pd.DataFrame, tabular.Columns]:
    """The table and its column kinds, from `config.data`."""
    if d.rossmann:
        if not d.path:
            raise InputError("the rossmann preset needs --config.data.path=DIR (Kaggle's Rossmann CSVs)")
        frame = rossmann_table(d.path)
        given = tabular.Columns(d.target, ROSSMANN_CAT, ROSSMANN_CONT, ["Date"])
    elif not d.path:
        frame = tabular.read_txhousing()
        target = d.target or TXHOUSING.target
        missing = frame[target].isna()
        print(f"txhousing: {int(missing.sum())} of {len(frame)} rows have no {target!r}, dropped")
        frame = frame[~missing]
        given = tabular.Columns(target, TXHOUSING.cat, TXHOUSING.cont, TXHOUSING.date)
    else:
        if not d.target:
            raise InputError(f"set --config.data.target to the column of {d.path} to predict")
        frame = tabular.read_csv(d.path)
        tabular.check_target(frame, d.target)
        given = None
    for event in _names(d.events):
        date = (given.date if given else _names(d.date) or [""])[0]
        if not date:
            raise InputError(f"data.events={d.events!r} needs a date column (data.date)")
        frame = tabular.add_event_days(frame, event, date, d.event_group or None)
    if given is None or d.cat is not None or d.cont is not None or d.date is not None:
        given = tabular.infer_columns(frame, given.target if given else d.target,
                                      _names(d.cat) if d.cat is not None else (given.cat if given else None),
                                      _names(d.cont) if d.cont is not None else (given.cont if given else None),
                                      _names(d.date) if d.date is not None else (given.date if given else None),
                                      d.max_categories)
    return frame, given


def split_rows(d: ml_collections.ConfigDict, frame: pd.DataFrame, columns: tabular.Columns, seed: int) -> np.ndarray:
    """0 (train), 1 (valid), 2 (test) per row, as `config.data.valid_by` says."""
    valid_by = d.valid_by or ("date" if columns.date else "random")
    if valid_by == "date":
        if not columns.date:
            raise InputError("data.valid_by='date' needs a date column (data.date)")
        dates = tabular.parse_dates(frame, columns.date[0])
        if d.valid_days:
            last = dates.max()
            split = np.where(dates > last - pd.Timedelta(days=d.valid_days), 1, 0)
        else:
            split = tabular.split_by_date(dates, d.valid_months, d.test_months)
    elif valid_by == "column":
        split = tabular.split_by_column(frame, d.valid_column)
    elif valid_by == "random":
        split = tabular.split_at_random(len(frame), d.valid_fraction, d.test_fraction, seed)
    else:
        raise InputError(f"data.valid_by={d.valid_by!r}: use 'date', 'column' or 'random'")
    if not (split == 0).any() or not (split == 1).any():
        raise InputError(f"data.valid_by={valid_by!r} leaves {int((split == 0).sum())} training and "
                         f"{int((split == 1).sum())} validation rows: both must be non-empty")
    return split


def _task_kind(d, frame: pd.DataFrame, target: str) -> str:
    if d.task:
        return d.task
    values = frame[target]
    kind = "regression" if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) \
        else "classification"
    print(f"data.task inferred from the target {target!r}: {kind}")
    return kind


def load_table(config: ml_collections.ConfigDict) -> TableData:
    d = config.data
    frame, columns = read_table(d)
    split = split_rows(d, frame, columns, config.seed)
    kind = _task_kind(d, frame, columns.target)
    train = frame[split == 0]
    log_target = d.log_target
    if kind == "regression" and log_target is None:
        log_target = bool((tabular.numeric_column(train, columns.target) > 0).all())
        print(f"data.log_target: {log_target} (every training target positive: {log_target})")
    date_parts = d.date_parts if (d.date_parts is not None or d.path) else TXHOUSING_DATE_PARTS
    frame, columns = with_target_lags(d, frame, columns, bool(log_target))
    train = frame[split == 0]
    prep = tabular.fit_preprocessing(train, columns, kind, bool(log_target), _names(date_parts),
                                     d.clip_to_training_range)
    arrays = lambda part: prep.arrays(frame[split == part])
    print(f"rows: {len(train)} train, {int((split == 1).sum())} valid, {int((split == 2).sum())} test; "
          f"categorical inputs {prep.cat_names}, continuous inputs {prep.cont_names}")
    return TableData(prep=prep, train=arrays(0), valid=arrays(1), test=arrays(2) if (split == 2).any() else None)


def target_lags(d: ml_collections.ConfigDict) -> list[int]:
    """`data.target_lags` as integers, checked against the held-out period: a shorter lag would feed a held-out
    row another held-out row's target."""
    spec = d.target_lags if d.target_lags is not None else ("" if d.path else TXHOUSING_LAGS)
    lags = [int(v) for v in _names(spec)]
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


def _lag_group(d: ml_collections.ConfigDict) -> str | None:
    """`data.lag_group`; None: txhousing's city, no group for your own table."""
    group = d.lag_group if d.lag_group is not None else ("" if d.path else "city")
    return group or None


def with_target_lags(d: ml_collections.ConfigDict, frame: pd.DataFrame, columns: tabular.Columns,
                     log: bool) -> tuple[pd.DataFrame, tabular.Columns]:
    """The table with the target's lags (`data.target_lags`; log units when the target is modelled in logs)
    as continuous columns."""
    lags = target_lags(d)
    if not lags:
        return frame, columns
    if not columns.date:
        raise InputError(f"data.target_lags={','.join(map(str, lags))} needs a date column (data.date)")
    frame = tabular.add_lags(frame, columns.target, columns.date[0], lags, d.lag_unit, _lag_group(d), log)
    names = [f"{columns.target}_lag{lag}" for lag in lags]
    return frame, tabular.Columns(columns.target, columns.cat, [*columns.cont, *names], columns.date)


# --- Rossmann --------------------------------------------------------------------------------------------------

def rossmann_table(directory: str, new_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Kaggle's Rossmann training rows joined and featured as the 2018 course did: stores, states, weather
    (by state name and date), Google trends (by state and week, and Germany's; the week that contains the
    day), competition months open and
    promo2 weeks (clipped), days since/until promotions and holidays per store; closed days and zero sales
    dropped. (The course's 7-day rolling counts of those events are left out.)

    With `new_rows` (test.csv's layout: no Sales), those rows joined and featured the same way, their days
    since/until events counted over the training history and themselves."""
    read = lambda name: tabular.read_csv(os.path.join(directory, f"{name}.csv"))
    train, store, store_states, state_names = read("train"), read("store"), read("store_states"), read("state_names")
    googletrend, weather = read("googletrend"), read("weather")
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
        frame = tabular.add_event_days(frame, event, "Date", "Store")
    if new_rows is not None:
        frame = frame[frame["new_row"]]
    else:
        frame = frame[(frame["Open"] != 0) & (frame["Sales"] > 0)]
    return frame.drop(columns=["Customers", "Open", "TrendWeek", "new_row"], errors="ignore").reset_index(drop=True)


# --- model and training ----------------------------------------------------------------------------------------

def make_model(config, prep: tabular.Preprocessing) -> TabularModel:
    m = config.model
    y_range = None
    if prep.task == "regression" and m.y_range_margin >= 0:
        low, high = prep.target_range
        margin = m.y_range_margin * (high - low)
        y_range = (low - margin, high + margin)
    return TabularModel(cardinalities=tuple(prep.cardinalities),
                        num_outputs=1 if prep.task == "regression" else len(prep.classes),
                        hidden=tuple(m.hidden), dropouts=tuple(m.dropouts), embedding_dropout=m.embedding_dropout,
                        y_range=y_range)


def _create_state_fn(config, prep: tabular.Preprocessing):
    model = make_model(config, prep)
    init = jax.jit(functools.partial(model.init, train=False))
    cat_1xC = jnp.zeros((1, len(prep.cat_names)), jnp.int32)
    cont_1xF = jnp.zeros((1, len(prep.cont_names)), jnp.float32)

    def create_state(tx, rng):
        variables = init(rng, cat_1xC, cont_1xF)
        return TrainState.create(apply_fn=model.apply, params=variables["params"],
                                 batch_stats=variables.get("batch_stats", {}), tx=tx)

    return create_state


def _task(prep: tabular.Preprocessing) -> steps.Task:
    return tabular_task.task(prep.task, prep.log_target)


def setup(config, mesh, data: TableData | None = None) -> experiment.Setup:
    data = data or load_table(config)
    batches = ArrayBatches(data.train, config.batch_size, mesh, config.seed)
    return experiment.Setup(
        create_state=_create_state_fn(config, data.prep),
        make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
        train_step=steps.make_train_step(_task(data.prep)), batches=batches)


def main_metric(prep: tabular.Preprocessing) -> str:
    """The number the run is judged by (lower is better)."""
    return tabular_task.percentage_error_name(prep.log_target) if prep.task == "regression" else "log_loss"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop_at: int | None = None) -> dict:
    """Fits the net (range test, 1cycle), scores it on validation (and test), fits the tree baselines on the
    same split and features, writes results.json, the preprocessing and the interpretation plots."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        data = load_table(config)
    data.prep.save(os.path.join(workdir, "preprocessing.json"))
    run = setup(config, mesh, data)
    task = _task(data.prep)
    eval_step = steps.make_eval_step(task)
    evaluate_valid = evaluation.make_evaluator(eval_step, data.valid, config.eval_batch_size, mesh,
                                               finish=task.finish)
    with timer("lr_find"):
        learning_rate = experiment.learning_rate(config, workdir, run)
    states = []
    with timer("train"):
        for seed, member_dir in _members(config, workdir):
            member_config = _with_seed(config, seed)
            member_run = run if seed == config.seed else setup(member_config, mesh, data)
            states.append(experiment.fit(member_config, member_dir, member_run, learning_rate, mesh, evaluate_valid,
                                         stop_at=stop_at))
            if stop_at is not None and stop_at < config.num_epochs * run.batches.steps_per_epoch:
                return {}
    c = config.checkpoint
    states = [inference.restore_trained(member_dir, state, c.best_metric, c.best_mode)
              for state, (_, member_dir) in zip(states, _members(config, workdir))]
    outputs = lambda arrays: _outputs(states, data.prep, arrays, config, mesh)
    metrics = net_scores(task, data.prep, outputs, data.valid, "valid_")
    if len(states) > 1:
        per_member = [evaluate_valid(state) for state in states]
        metrics.update({f"{k}_member_mean": float(np.mean([m[k] for m in per_member])) for k in per_member[0]})
    if data.test is not None:
        with timer("test"):
            metrics.update(net_scores(task, data.prep, outputs, data.test, "test_"))
    baselines = {}
    if config.baselines:
        with timer("baselines"):
            baselines = tabular_baselines.fit_baselines(data.prep.task, data.prep.log_target,
                                                        data.prep.cardinalities, data.train, data.valid, data.test,
                                                        config.seed)
        for name, scores in baselines.items():
            print(f"{name}: " + " ".join(f"{k}={v:.4f}" for k, v in scores.items() if k.startswith("valid_")))
    importance = {}
    if config.interpret and jax.process_index() == 0:
        with timer("interpret"):
            importance = interpret(workdir, states[0], data, outputs, task)
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, learning_rate=learning_rate,
                                    steps=config.num_epochs * run.batches.steps_per_epoch, baselines=baselines,
                                    permutation_importance=importance, inputs={
                                        "categorical": data.prep.cat_names, "continuous": data.prep.cont_names})


def _members(config, workdir: str) -> list[tuple[int, str]]:
    """(seed, workdir) of each member of the ensemble: the workdir itself for a single net."""
    if config.ensemble < 1:
        raise InputError(f"ensemble={config.ensemble}: the net needs at least one member")
    if config.ensemble == 1:
        return [(config.seed, workdir)]
    return [(config.seed + k, os.path.join(workdir, f"member_{k}")) for k in range(config.ensemble)]


def _with_seed(config, seed: int) -> ml_collections.ConfigDict:
    member_config = config.copy_and_resolve_references()
    member_config.seed = seed
    return member_config


def _predict_fn(prep):
    return steps.make_predict(_task(prep))


def _outputs(states, prep, arrays: dict, config, mesh) -> np.ndarray:
    """Model-unit predictions (N) or class probabilities (N x K) of the rows in `arrays`, averaged over the
    ensemble's members' states."""
    inputs = {"cat": arrays["cat"], "cont": arrays["cont"]}
    batch_size = min(config.eval_batch_size, max(len(arrays["cat"]), 1))

    def one(member_state):
        outputs = evaluation.predict_outputs(_predict_fn(prep), member_state, inputs, batch_size, mesh)
        return outputs.reshape(-1) if prep.task == "regression" else np.asarray(jax.nn.softmax(outputs, -1))

    return np.mean([one(state) for state in states], axis=0)


def net_scores(task: steps.Task, prep: tabular.Preprocessing, outputs, arrays: dict,
               prefix: str) -> dict[str, float]:
    """The task's metrics (and AUC for a binary target) of the net's averaged outputs on `arrays`."""
    predicted = outputs(arrays)
    as_model_output = predicted if prep.task == "regression" else np.log(np.clip(predicted, 1e-12, 1.0))
    summed = task.metrics(jnp.asarray(as_model_output), arrays, np.ones(len(arrays["target"]), np.float32))
    metrics = {prefix + k: v for k, v in task.finish(jax.device_get(summed)).items()}
    if prep.task == "classification" and len(prep.classes) == 2:
        metrics[prefix + "auc"] = tabular_task.binary_auc(predicted, arrays["target"])
    return metrics


def interpret(workdir: str, state, data: TableData, outputs, task) -> dict[str, float]:
    """permutation_importance.png (each input column shuffled on the validation rows) and
    embedding_pca.png (the largest embedding's categories on 2 principal components)."""
    prep, metric = data.prep, main_metric(data.prep)
    score = lambda arrays: net_scores(task, prep, outputs, arrays, "")[metric]
    importance = tabular_interpret.permutation_importance(score, data.valid, prep.cat_names, prep.cont_names)
    tabular_interpret.plot_importance(os.path.join(workdir, "permutation_importance.png"), importance, metric)
    if prep.categories:
        largest = int(np.argmax([len(v) for v in prep.categories.values()]))
        column = list(prep.categories)[largest]
        table = np.asarray(state.params[f"embedding_{largest}"]["embedding"])  # an ensemble's first member
        tabular_interpret.plot_embedding(os.path.join(workdir, "embedding_pca.png"), table,
                                         prep.categories[column], column)
    return {k: round(float(v), 5) for k, v in importance.items()}


def predict(config: ml_collections.ConfigDict, workdir: str, input_path: str, output_path: str) -> int:
    """Predictions for the rows of the CSV `input_path` with the run's saved preprocessing and checkpoint:
    the input's columns plus `prediction` (original units) or `prediction` (class) and `probability`."""
    prep = tabular.Preprocessing.load(os.path.join(workdir, "preprocessing.json"))
    if config.data.rossmann:
        frame = rossmann_rows(config.data.path, input_path)
    else:
        frame = tabular.read_csv(input_path)
        for event in _names(config.data.events):
            frame = tabular.add_event_days(frame, event, prep.date_columns[0], config.data.event_group or None)
        if target_lags(config.data):
            frame = _new_rows_with_lags(config.data, frame, prep)
    arrays = prep.arrays(frame, with_target=False)
    mesh = sharding.make_mesh(1)
    create_state, tx = _create_state_fn(config, prep), experiment.one_cycle_optimizer(config, 1e-3, 0)
    c = config.checkpoint
    states = [inference.restore_trained(member_dir, create_state(tx, jax.random.key(seed)), c.best_metric,
                                         c.best_mode) for seed, member_dir in _members(config, workdir)]
    outputs = _outputs(states, prep, arrays, config, mesh)
    written = frame.copy()
    if prep.task == "regression":
        written["prediction"] = prep.to_original_units(outputs)
    else:
        written["prediction"] = [prep.classes[k] for k in outputs.argmax(-1)]
        written["probability"] = outputs.max(-1)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    written.to_csv(output_path, index=False)
    return len(written)


def _new_rows_with_lags(d: ml_collections.ConfigDict, rows: pd.DataFrame, prep: tabular.Preprocessing):
    """New rows with the target's lags read from the training table (`config.data`) and the new rows; a new row
    replaces the table's row of the same group and date."""
    history, columns = read_table(d)
    date = columns.date[0]
    keys = [c for c in (_lag_group(d), date) if c]
    tabular.check_columns(rows, keys)
    rows = rows.assign(**{date: tabular.parse_dates(rows, date)})
    history = history.assign(**{date: tabular.parse_dates(history, date)})
    known = history[keys].merge(rows[keys].drop_duplicates(), how="left", on=keys, indicator=True)
    history = history[(known["_merge"] == "left_only").to_numpy()]
    both = pd.concat([history.assign(_new_row=False), rows.assign(_new_row=True)], ignore_index=True)
    both, with_lags = with_target_lags(d, both, columns, prep.log_target)
    lag_names = [name for name in with_lags.cont if name not in columns.cont]
    return both.loc[both["_new_row"], [*rows.columns, *lag_names]].reset_index(drop=True)


def rossmann_rows(directory: str, input_path: str) -> pd.DataFrame:
    """New Rossmann rows (Kaggle's test.csv layout) joined and featured like the training rows."""
    if not directory:
        raise InputError("the rossmann run's config has no data.path (the directory of Kaggle's CSVs)")
    return rossmann_table(directory, tabular.read_csv(input_path))
