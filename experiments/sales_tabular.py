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

Reaches (default preset, idle 2-core CPU, 29 s for the whole command): validation exp-RMSPE 0.1383 for the net
(40 epochs, lr 1e-2, inputs clipped to the training range; 0.1406 mean over seeds 0-3), HistGradientBoosting
0.1316 and RandomForest 0.1429 on the same split and features. The net beats the forest, not yet the boosted
trees (issue 13's bar).
"""

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd

from research import configs, evaluation, experiment, sharding, tabular_baselines, tabular_interpret
from research.data import tabular
from research.data.arrays import ArrayBatches
from research.errors import InputError
from research.models.tabular import TabularModel
from research.tasks import steps
from research.tasks import tabular as tabular_task
from research.train_state import TrainState

TXHOUSING = tabular.Columns(target="sales", cat=["city"], cont=[], date=["date"])
# Monthly rows: the day, week and weekday of the 1st of a month carry no signal (chosen on validation).
TXHOUSING_DATE_PARTS = "month,year,elapsed"

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
    c.baselines = True
    c.interpret = True
    if preset == "rossmann":
        c.data.update(rossmann=True, target="Sales", valid_days=48, valid_by="date", log_target=True,
                      task="regression")
        c.batch_size = 512
        c.eval_batch_size = 2048
        c.num_epochs = 3
        c.learning_rate = 1e-3  # the course's rate for Rossmann
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
    prep = tabular.fit_preprocessing(train, columns, kind, bool(log_target), _names(date_parts),
                                     d.clip_to_training_range)
    arrays = lambda part: prep.arrays(frame[split == part])
    print(f"rows: {len(train)} train, {int((split == 1).sum())} valid, {int((split == 2).sum())} test; "
          f"categorical inputs {prep.cat_names}, continuous inputs {prep.cont_names}")
    return TableData(prep=prep, train=arrays(0), valid=arrays(1), test=arrays(2) if (split == 2).any() else None)


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
    with timer("train"):
        state = experiment.fit(config, workdir, run, learning_rate, mesh, evaluate_valid, stop_at=stop_at)
    if stop_at is not None and stop_at < config.num_epochs * run.batches.steps_per_epoch:
        return {}
    c = config.checkpoint
    state = experiment.restore_trained(workdir, state, c.best_metric, c.best_mode)
    outputs = lambda arrays: _outputs(state, data.prep, arrays, config.eval_batch_size, mesh)
    metrics = evaluate_valid(state)
    metrics.update(_auc(data.prep, outputs, data.valid, "valid_"))
    if data.test is not None:
        with timer("test"):
            evaluate_test = evaluation.make_evaluator(eval_step, data.test, config.eval_batch_size, mesh,
                                                      prefix="test_", finish=task.finish)
            metrics.update(evaluate_test(state))
            metrics.update(_auc(data.prep, outputs, data.test, "test_"))
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
            importance = interpret(workdir, state, data, outputs, task)
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, learning_rate=learning_rate,
                                    steps=config.num_epochs * run.batches.steps_per_epoch, baselines=baselines,
                                    permutation_importance=importance, inputs={
                                        "categorical": data.prep.cat_names, "continuous": data.prep.cont_names})


def _predict_fn(prep):
    return steps.make_predict(_task(prep))


def _outputs(state, prep, arrays: dict, batch_size: int, mesh) -> np.ndarray:
    """Model-unit predictions (N) or class probabilities (N x K) of the rows in `arrays`."""
    inputs = {"cat": arrays["cat"], "cont": arrays["cont"]}
    outputs = evaluation.predict_outputs(_predict_fn(prep), state, inputs, batch_size, mesh)
    if prep.task == "regression":
        return outputs.reshape(-1)
    return np.asarray(jax.nn.softmax(outputs, -1))


def _auc(prep, outputs, arrays, prefix) -> dict:
    if prep.task != "classification" or len(prep.classes) != 2:
        return {}
    return {prefix + "auc": tabular_task.binary_auc(outputs(arrays), arrays["target"])}


def interpret(workdir: str, state, data: TableData, outputs, task) -> dict[str, float]:
    """permutation_importance.png (each input column shuffled on the validation rows) and
    embedding_pca.png (the largest embedding's categories on 2 principal components)."""
    prep, metric = data.prep, main_metric(data.prep)
    mask_N = np.ones(len(data.valid["target"]), np.float32)

    def score(arrays):
        summed = task.metrics(jnp.asarray(outputs(arrays)) if prep.task == "regression"
                              else jnp.log(jnp.clip(outputs(arrays), 1e-7, 1.0)), arrays, mask_N)
        return task.finish(jax.device_get(summed))[metric]

    importance = tabular_interpret.permutation_importance(score, data.valid, prep.cat_names, prep.cont_names)
    tabular_interpret.plot_importance(os.path.join(workdir, "permutation_importance.png"), importance, metric)
    if prep.categories:
        largest = int(np.argmax([len(v) for v in prep.categories.values()]))
        column = list(prep.categories)[largest]
        table = np.asarray(state.params[f"embedding_{largest}"]["embedding"])
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
    arrays = prep.arrays(frame, with_target=False)
    mesh = sharding.make_mesh(1)
    state = _create_state_fn(config, prep)(experiment.one_cycle_optimizer(config, 1e-3, 0),
                                           jax.random.key(config.seed))
    state = experiment.restore_trained(workdir, state, config.checkpoint.best_metric, config.checkpoint.best_mode)
    outputs = _outputs(state, prep, arrays, min(config.eval_batch_size, max(len(frame), 1)), mesh)
    written = frame.copy()
    if prep.task == "regression":
        written["prediction"] = prep.to_original_units(outputs)
    else:
        written["prediction"] = [prep.classes[k] for k in outputs.argmax(-1)]
        written["probability"] = outputs.max(-1)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    written.to_csv(output_path, index=False)
    return len(written)


def rossmann_rows(directory: str, input_path: str) -> pd.DataFrame:
    """New Rossmann rows (Kaggle's test.csv layout) joined and featured like the training rows."""
    if not directory:
        raise InputError("the rossmann run's config has no data.path (the directory of Kaggle's CSVs)")
    return rossmann_table(directory, tabular.read_csv(input_path))
