"""Structured data (lesson 3): each preprocessing rule on tiny hand-made tables, the embedding-size rule,
exp-RMSPE on hand-computed values, real training steps on txhousing, and a table the project was never tuned on
(Palmer penguins, from plotnine's wheel) trained with config keys only, beside the tree baselines."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from research.core import inference, sharding
from research.core.embeddings import embedding_size
from research.core.errors import InputError
from research.tabular import (dataset, dates, ensemble, lags, preprocessing, recipe, rossmann, splits,
                              table as tabular, task as tabular_task)
from research.tabular.model import TabularModel
from experiments import sales_tabular

HAS_WHEEL = os.path.exists(os.path.join(tabular.wheel_dir(), tabular.PLOTNINE_WHEEL))
# Under CI the plotnine wheel must be there (scripts/setup.sh fetches it): the tests then fail naming it.
needs_wheel = pytest.mark.skipif(not HAS_WHEEL and not os.environ.get("CI"),
                                 reason="plotnine's wheel (scripts/setup.sh) is not downloaded")


def _shops(**extra) -> pd.DataFrame:
    frame = pd.DataFrame({"shop": ["a", "b", "a", "c", "b", "z"],
                          "size": [1.0, np.nan, 3.0, 5.0, 100.0, np.nan],
                          "sales": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]})
    return frame.assign(**extra)


def _fit(frame, rows=4, **kwargs):
    columns = tabular.Columns("sales", ["shop"], ["size"])
    return preprocessing.fit_preprocessing(frame.iloc[:rows], columns, **kwargs)


def test_categories_come_from_training_rows_and_unseen_ones_get_the_unknown_index():
    prep = _fit(_shops())
    assert prep.categories == {"shop": ["a", "b", "c"]}
    cat = prep.arrays(_shops())["cat"]
    # a b a c b -> 1 2 1 3 2; "z" never seen in training -> 0 (unknown)
    np.testing.assert_array_equal(cat[:, 0], [1, 2, 1, 3, 2, 0])
    assert prep.cardinalities[0] == 4  # 3 categories + unknown


def test_missing_continuous_values_get_the_training_median_and_an_indicator_column():
    prep = _fit(_shops())
    # training sizes 1, NaN, 3, 5 -> median 3; filled 1, 3, 3, 5 -> mean 3, std sqrt(2)
    assert prep.medians == {"size": 3.0} and prep.indicators == ["size"]
    assert prep.means["size"] == 3.0 and prep.stds["size"] == pytest.approx(math.sqrt(2.0))
    arrays = prep.arrays(_shops())
    assert prep.cat_names == ["shop", "size_na"]
    np.testing.assert_array_equal(arrays["cat"][:, 1], [1, 2, 1, 1, 1, 2])  # 2 where the size was missing
    expected = (np.array([1, 3, 3, 5, 100, 3]) - 3.0) / math.sqrt(2.0)
    np.testing.assert_allclose(arrays["cont"][:, 0], expected, rtol=1e-6)


def test_statistics_come_from_training_rows_only():
    """Rows 4 and 5 (size 100, a missing value, shop z) are validation rows: they change nothing fitted."""
    assert _fit(_shops()) == _fit(_shops().assign(size=[1.0, np.nan, 3.0, 5.0, -7.0, 8.0], shop=list("abacqq")))
    prep = _fit(_shops(), rows=6)  # fitted on all six rows, the statistics do change
    assert prep.medians["size"] == 4.0 and prep.categories["shop"] == ["a", "b", "c", "z"]


def test_no_indicator_without_missing_training_values_and_the_target_range():
    frame = _shops(size=[1.0, 2.0, 3.0, 4.0, np.nan, 6.0])
    prep = _fit(frame, log_target=True)
    assert prep.indicators == [] and prep.cat_names == ["shop"]
    np.testing.assert_allclose(prep.arrays(frame)["cont"][4, 0], (2.5 - 2.5) / prep.stds["size"])  # median 2.5
    np.testing.assert_allclose(prep.target_range, [math.log(10.0), math.log(40.0)])
    np.testing.assert_allclose(prep.arrays(frame)["target"], np.log([10, 20, 30, 40, 50, 60]), rtol=1e-6)


def test_date_parts_of_known_dates_including_a_leap_day():
    days = pd.Series(pd.to_datetime(["2020-02-29", "2016-12-31", "1970-01-01"]))
    parts = dates.date_parts(days, "d")
    leap = parts.iloc[0]
    # 2020-02-29 was a Saturday, the 60th day of the year, in ISO week 9, the last day of February
    assert (leap.d_year, leap.d_month, leap.d_week, leap.d_day) == (2020, 2, 9, 29)
    assert (leap.d_dayofweek, leap.d_dayofyear, leap.d_elapsed) == (5, 60, 18321)
    assert leap.d_is_month_end and not leap.d_is_month_start and not leap.d_is_quarter_end
    new_year_eve = parts.iloc[1]  # a leap year's last day: day 366, ISO week 52, a Saturday
    assert (new_year_eve.d_dayofyear, new_year_eve.d_week, new_year_eve.d_dayofweek) == (366, 52, 5)
    assert new_year_eve.d_is_year_end and new_year_eve.d_is_quarter_end and new_year_eve.d_is_month_end
    epoch = parts.iloc[2]
    assert epoch.d_elapsed == 0 and epoch.d_is_year_start and epoch.d_is_quarter_start


def test_date_columns_expand_into_parts_and_constant_parts_are_dropped():
    frame = pd.DataFrame({"when": ["2015-01-01", "2015-02-01", "2015-03-01", "2016-04-01"], "y": [1.0, 2, 3, 4]})
    prep = preprocessing.fit_preprocessing(frame, tabular.Columns("y", [], [], ["when"]))
    assert prep.date_columns == ["when"]
    assert "when_day" not in prep.cat_names and "when_is_month_start" not in prep.cat_names  # always 1 / True
    assert "when_month" in prep.cat_names and prep.cont_names == ["when_year", "when_dayofyear", "when_elapsed"]
    month = prep.cat_names.index("when_month")
    np.testing.assert_array_equal(prep.arrays(frame)["cat"][:, month], [1, 2, 3, 4])


def test_days_since_and_until_an_event_within_each_group():
    frame = pd.DataFrame({"store": [1, 1, 1, 1, 2, 2], "promo": [0, 1, 0, 0, 0, 1],
                          "day": ["2015-01-01", "2015-01-02", "2015-01-04", "2015-01-07", "2015-01-01",
                                  "2015-01-03"]})
    out = dates.add_event_days(frame, "promo", "day", "store")
    np.testing.assert_array_equal(out["days_since_promo"], [-1, 0, 2, 5, -1, 0])
    np.testing.assert_array_equal(out["days_until_promo"], [1, 0, -1, -1, 2, 0])


def test_lags_read_the_same_group_months_or_days_before_and_leave_gaps_missing():
    frame = pd.DataFrame({"city": ["a", "a", "a", "b", "b"], "sales": [10.0, 20.0, 40.0, 7.0, 9.0],
                          "month": ["2014-01-01", "2015-01-01", "2016-01-01", "2015-01-01", "2016-03-01"]})
    out = lags.add_lags(frame, "sales", "month", [12, 24], group="city")
    np.testing.assert_array_equal(out["sales_lag12"], [np.nan, 10.0, 20.0, np.nan, np.nan])
    np.testing.assert_array_equal(out["sales_lag24"], [np.nan, np.nan, 10.0, np.nan, np.nan])
    logged = lags.add_lags(frame, "sales", "month", [12], group="city", log=True)
    np.testing.assert_allclose(logged["sales_lag12"][1:3], np.log([10.0, 20.0]))
    days = lags.add_lags(frame, "sales", "month", [365], unit="days", group="city")
    np.testing.assert_array_equal(days["sales_lag365"], [np.nan, 10.0, 20.0, np.nan, np.nan])
    ungrouped = lags.add_lags(frame.iloc[:3], "sales", "month", [12])
    np.testing.assert_array_equal(ungrouped["sales_lag12"], [np.nan, 10.0, 20.0])
    with pytest.raises(InputError, match="one row per city and month: row 4 repeats one"):
        lags.add_lags(frame.assign(month=frame["month"].where(frame.index != 4, "2015-01-01")), "sales",
                      "month", [12], group="city")


def test_target_lags_shorter_than_the_held_out_period_or_with_a_random_split_are_refused():
    config = sales_tabular.get_config()
    assert lags.target_lags(config.data) == [12, 24]  # txhousing's default
    config.data.target_lags = "6,12"
    with pytest.raises(InputError, match="each lag must be at least the held-out period, 12 months"):
        lags.target_lags(config.data)
    config.data.update(target_lags="12", test_months=6)
    with pytest.raises(InputError, match="at least the held-out period, 18 months"):
        lags.target_lags(config.data)
    config.data.update(target_lags="24", valid_by="random")
    with pytest.raises(InputError, match="needs data.valid_by='date'"):
        lags.target_lags(config.data)
    config.data.update(target_lags="", valid_by="random")
    assert lags.target_lags(config.data) == []


@needs_wheel
def test_txhousing_predictions_for_new_rows_read_their_lags_from_the_history(tmp_path):
    """One short epoch of the default table (lags 12 and 24 months): predicting the validation rows from a CSV
    without their sales gives the net's own validation outputs, so the lags were rebuilt from the history."""
    config = sales_tabular.get_config()
    config.update(num_epochs=1, min_steps=0, ensemble=1, baselines=False, interpret=False)
    workdir = str(tmp_path / "run")
    sales_tabular.train_and_evaluate(config, workdir)
    data = dataset.load_table(config)
    assert {"sales_lag12", "sales_lag24"} <= set(data.prep.cont_names)
    frame, _ = dataset.read_table(config.data)
    valid = frame[frame["date"] >= "2014-08-01"]
    valid.drop(columns=["sales"]).assign(date=valid["date"].dt.strftime("%Y-%m-%d")).to_csv(
        tmp_path / "new.csv", index=False)
    rows = sales_tabular.predict(config, workdir, str(tmp_path / "new.csv"))
    assert len(rows) == 546
    states = recipe.restore_members(config, workdir, data.prep)
    expected = data.prep.to_original_units(
        ensemble.outputs(states, data.prep, data.valid, config, sharding.make_mesh(1)))
    np.testing.assert_allclose([row["prediction"] for row in rows], expected, rtol=1e-4)


def test_saved_preprocessing_applied_to_new_rows(tmp_path):
    prep = _fit(_shops())
    prep.save(str(tmp_path / "preprocessing.json"))
    loaded = preprocessing.Preprocessing.load(str(tmp_path / "preprocessing.json"))
    assert loaded == prep
    new_rows = pd.DataFrame({"shop": ["c", "new", None], "size": [5.0, None, 1.0]})  # no target column
    arrays = loaded.arrays(new_rows, with_target=False)
    np.testing.assert_array_equal(arrays["cat"], [[3, 1], [0, 2], [0, 1]])
    np.testing.assert_allclose(arrays["cont"][:, 0], (np.array([5.0, 3.0, 1.0]) - 3.0) / math.sqrt(2.0), rtol=1e-6)
    assert "target" not in arrays


def test_split_by_date_validates_on_the_last_months():
    months = pd.Series(pd.date_range("2013-01-01", "2015-07-01", freq="MS"))
    split = splits.split_by_date(months, valid_months=12)
    assert (split == 1).sum() == 12 and months[split == 1].min() == pd.Timestamp("2014-08-01")
    split = splits.split_by_date(months, valid_months=12, test_months=6)
    assert (split == 2).sum() == 6 and months[split == 2].min() == pd.Timestamp("2015-02-01")
    assert (split == 1).sum() == 12 and months[split == 1].min() == pd.Timestamp("2014-02-01")


@pytest.mark.parametrize("frame, call, message", [
    (_shops(), lambda f: _fit(f.drop(columns=["size"])), "column 'size' is not in the table"),
    (_shops(sales=[1.0, None, 3.0, 4.0, 5.0, 6.0]), _fit, "target column 'sales' is empty at row 1"),
    (_shops(size=["1", "2", "x3", "4", "5", "6"]), _fit, "continuous column 'size': 'x3' at row 2 is not a number"),
    (_shops(sales=[1.0, 2.0, 3.0, 0.0, 5.0, 6.0]), lambda f: _fit(f, log_target=True),
     "target column 'sales': 0.0 at row 3 is not positive"),
])
def test_bad_tables_are_one_line_errors_naming_column_and_row(frame, call, message):
    with pytest.raises(InputError, match=message) as raised:
        call(frame)
    assert "\n" not in str(raised.value)


def test_rows_are_named_as_read_even_after_a_split():
    frame = _shops(size=[1.0, 2.0, 3.0, 4.0, 5.0, "oops"])
    prep = _fit(frame)
    with pytest.raises(InputError, match="'oops' at row 5"):
        prep.arrays(frame.iloc[4:])


def test_embedding_size_rule():
    """fastai's rule: min(600, round(1.6 * n ** 0.56)), n counting the unknown index."""
    assert [embedding_size(n) for n in (2, 3, 13, 47, 1116, 10 ** 6)] == [2, 3, 7, 14, 81, 600]
    model = TabularModel(cardinalities=(47, 13), hidden=(8,), dropouts=(0.0,))
    params = model.init(jax.random.key(0), jnp.zeros((2, 2), jnp.int32), jnp.zeros((2, 3)), train=False)["params"]
    assert params["embedding_0"]["embedding"].shape == (47, 14)
    assert params["embedding_1"]["embedding"].shape == (13, 7)
    assert params["Dense_0"]["kernel"].shape == (14 + 7 + 3, 8)


def test_y_range_squashes_outputs_with_a_scaled_sigmoid():
    model = TabularModel(cardinalities=(3,), hidden=(4,), dropouts=(0.0,), y_range=(2.0, 5.0))
    cat, cont = jnp.array([[0], [1], [2]]), 1e3 * jnp.arange(6.0).reshape(3, 2)
    variables = model.init(jax.random.key(0), cat, cont, train=False)
    variables = jax.tree.map(lambda x: x * 1e3, variables)  # huge weights: outputs near the range's ends
    out = model.apply(variables, cat, cont, train=False)
    assert out.shape == (3, 1) and bool(jnp.all((out >= 2.0) & (out <= 5.0)))


def test_rmspe_rmse_and_mae_on_hand_computed_values_over_padded_batches():
    actual = np.array([100.0, 200.0, 50.0, 80.0, 0.0])  # the 0 has no percentage error: left out of RMSPE
    predicted = np.array([110.0, 180.0, 50.0, 100.0, 5.0])
    task = tabular_task.regression_task(log_target=False)
    total = None
    for start in (0, 3):  # batches of 3, the second one padded (mask): the sums combine exactly
        pad = 3 - len(actual[start:start + 3])
        mask = np.concatenate([np.ones(3 - pad), np.zeros(pad)])
        batch = {"target": jnp.asarray(np.pad(actual[start:start + 3], (0, pad)))}
        sums = task.metrics(jnp.asarray(np.pad(predicted[start:start + 3], (0, pad))), batch, jnp.asarray(mask))
        total = sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)
    done = task.finish(jax.device_get(total))
    # percentage errors (110-100)/100, (180-200)/200, 0, (100-80)/80 -> 0.1, -0.1, 0, 0.25
    assert done["rmspe"] == pytest.approx(math.sqrt((0.01 + 0.01 + 0 + 0.0625) / 4), rel=1e-5)
    assert done["rmse"] == pytest.approx(math.sqrt((100 + 400 + 0 + 400 + 25) / 5), rel=1e-5)
    assert done["mae"] == pytest.approx((10 + 20 + 0 + 20 + 5) / 5, rel=1e-5)
    assert tabular_task.rmspe(predicted, actual) == pytest.approx(done["rmspe"], rel=1e-5)


def test_exp_rmspe_is_taken_after_exp_of_log_predictions():
    """Rossmann's exp-RMSPE: the model predicts log(sales); the error is a percentage of the sales."""
    actual, predicted = np.array([100.0, 200.0, 50.0, 80.0]), np.array([110.0, 180.0, 50.0, 100.0])
    task = tabular_task.regression_task(log_target=True)
    sums = task.metrics(jnp.log(predicted)[:, None], {"target": jnp.log(actual)}, jnp.ones(4))
    done = task.finish(jax.device_get(sums))
    assert done["exp_rmspe"] == pytest.approx(math.sqrt((0.01 + 0.01 + 0 + 0.0625) / 4), rel=1e-5)
    assert done["loss"] == pytest.approx(np.mean(np.log(predicted / actual) ** 2), rel=1e-5)
    assert done["mae"] == pytest.approx(12.5, rel=1e-5)


def test_classification_metrics_on_hand_computed_values():
    probabilities = np.array([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    labels = np.array([0, 0, 1])
    sums = tabular_task.classification_sums(np.log(probabilities), labels, np.ones(3))
    done = tabular_task.classification_finish(jax.device_get(sums))
    assert done["accuracy"] == pytest.approx(2 / 3)
    assert done["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.4) + math.log(0.7)) / 3, rel=1e-5)
    assert tabular_task.binary_auc(probabilities, labels) == 1.0  # both class-1 scores above... 0.7 > 0.6 > 0.2
    assert tabular_task.binary_auc(probabilities, np.array([1, 0, 0])) == 0.0


@needs_wheel
def test_a_few_real_training_steps_on_txhousing_lower_the_loss():
    config = sales_tabular.get_config()
    config.learning_rate = 3e-3
    data = dataset.load_table(config)
    assert data.train["cat"].shape == (7488, len(data.prep.cat_names)) and len(data.valid["target"]) == 546
    assert data.prep.categories["city"][:2] == ["Abilene", "Amarillo"] and len(data.prep.categories["city"]) == 46
    mesh = sharding.make_mesh(1)
    run = recipe.setup_on(config, mesh, data)
    state = run.create_state(run.make_tx(3e-3, 0), jax.random.key(0))
    step = jax.jit(run.train_step)
    losses = []
    for t in range(60):
        state, metrics = step(state, run.batches.batch(t), jax.random.key(t))
        losses.append(float(metrics["loss"] / metrics["count"]))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses


def _write_penguins(path, target_filter=None) -> pd.DataFrame:
    frame = tabular.read_wheel_csv("penguins")
    if target_filter:
        frame = frame[frame[target_filter].notna()]
    frame.to_csv(path, index=False)
    return frame


def _small_run_config(path, target, **data):
    config = sales_tabular.get_config()
    config.data.path, config.data.target = str(path), target
    config.data.update(valid_by="random", **data)
    config.update(num_epochs=8, min_steps=0, ensemble=1)
    return config


@needs_wheel
def test_a_classification_csv_trains_with_config_keys_only_beside_the_trees(tmp_path, capsys):
    """Palmer penguins (344 rows, 3 species, text and numeric columns, missing values), never used to tune
    anything here: the column kinds are inferred, the species predicted, accuracy and log loss reported beside
    HistGradientBoosting and RandomForest; then predictions for new rows through the saved preprocessing."""
    csv = tmp_path / "penguins.csv"
    frame = _write_penguins(csv)
    workdir = str(tmp_path / "run")
    config = _small_run_config(csv, "species")
    config.ensemble = 2  # two members, their probabilities averaged
    results = sales_tabular.train_and_evaluate(config, workdir)
    printed = capsys.readouterr().out
    assert "categorical ['island', 'sex', 'year']" in printed and "data.task inferred" in printed
    metrics, baselines = results["metrics"], results["baselines"]
    assert metrics["valid_accuracy"] >= 0.95 and metrics["valid_log_loss"] < 0.3, metrics
    # log loss is convex in the probabilities: the average's is at most the members' mean
    assert metrics["valid_log_loss"] <= metrics["valid_log_loss_member_mean"] + 1e-6, metrics
    assert os.path.isdir(os.path.join(workdir, "checkpoints"))  # one stacked checkpoint holds both members
    for name in ("hist_gradient_boosting", "random_forest"):
        assert baselines[name]["valid_accuracy"] >= 0.9 and "valid_log_loss" in baselines[name]
    assert {"bill_length_mm_na", "sex_na"} & set(results["inputs"]["categorical"]) == {"bill_length_mm_na"}
    assert os.path.exists(os.path.join(workdir, "permutation_importance.png"))
    assert os.path.exists(os.path.join(workdir, "embedding_pca.png"))
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["baselines"]["random_forest"]["chosen_by"] == "valid_log_loss"

    new_rows = frame.drop(columns=["species"]).iloc[[0, 200, 300]]
    new_rows.to_csv(tmp_path / "new.csv", index=False)
    rows = sales_tabular.predict(config, workdir, str(tmp_path / "new.csv"))
    assert inference.write_csv(str(tmp_path / "predictions.csv"), rows) == 3
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions["prediction"]) == list(frame["species"].iloc[[0, 200, 300]])
    assert (predictions["probability"] > 0.5).all()


@needs_wheel
def test_a_binary_target_reports_auc_and_a_missing_target_names_the_row(tmp_path):
    csv = tmp_path / "penguins.csv"
    _write_penguins(csv)
    with pytest.raises(InputError, match="target column 'sex' is empty at row 3 "):
        dataset.load_table(_small_run_config(csv, "sex"))
    _write_penguins(csv, target_filter="sex")
    config = _small_run_config(csv, "sex")
    config.baselines = config.interpret = False
    metrics = sales_tabular.train_and_evaluate(config, str(tmp_path / "run"))["metrics"]
    assert metrics["valid_auc"] > 0.9 and metrics["valid_accuracy"] > 0.8, metrics


def test_rossmann_joins_and_features_on_a_tiny_hand_made_table(tmp_path):
    """Kaggle's Rossmann files cannot be shipped: the joins and features run on a hand-made miniature with the
    real column names."""
    days = pd.date_range("2015-07-01", "2015-07-10")
    train = pd.DataFrame([dict(Store=s, DayOfWeek=d.dayofweek + 1, Date=d.strftime("%Y-%m-%d"),
                               Sales=0 if (s == 2 and i == 3) else 1000 + 10 * i + s, Customers=100,
                               Open=1, Promo=int(i in (2, 3)), StateHoliday="a" if i == 5 else "0",
                               SchoolHoliday=int(i == 8)) for s in (1, 2) for i, d in enumerate(days)])
    store = pd.DataFrame(dict(Store=[1, 2], StoreType=["a", "c"], Assortment=["a", "c"],
                              CompetitionDistance=[500.0, np.nan], CompetitionOpenSinceMonth=[3, np.nan],
                              CompetitionOpenSinceYear=[2015, np.nan], Promo2=[0, 1], Promo2SinceWeek=[np.nan, 26],
                              Promo2SinceYear=[np.nan, 2015], PromoInterval=[np.nan, "Jan,Apr,Jul,Oct"]))
    store_states = pd.DataFrame(dict(Store=[1, 2], State=["HE", "HB,NI"]))
    state_names = pd.DataFrame(dict(StateName=["Hessen", "Niedersachsen"], State=["HE", "HB,NI"]))
    weather = pd.DataFrame([dict(file=name, Date=d.strftime("%Y-%m-%d"), Max_TemperatureC=20 + i,
                                 Mean_TemperatureC=15, Min_TemperatureC=10, Max_Humidity=90, Mean_Humidity=70,
                                 Min_Humidity=40, Max_Wind_SpeedKm_h=20, Mean_Wind_SpeedKm_h=10, CloudCover=4.0,
                                 Events="Rain" if i % 2 else np.nan)
                            for name in ("Hessen", "Niedersachsen") for i, d in enumerate(days)])
    weeks = ["2015-06-28 - 2015-07-04", "2015-07-05 - 2015-07-11"]
    googletrend = pd.DataFrame([dict(file=f"Rossmann_DE{suffix}", week=w, trend=t + k)
                                for suffix, t in (("", 50), ("_HE", 60), ("_NI", 70)) for k, w in enumerate(weeks)])
    for name, table in dict(train=train, store=store, store_states=store_states, state_names=state_names,
                            weather=weather, googletrend=googletrend).items():
        table.to_csv(tmp_path / f"{name}.csv", index=False)

    frame = rossmann.read(str(tmp_path))
    assert len(frame) == 19  # 20 store-days, one with zero sales dropped
    first = frame[(frame.Store == 1) & (frame.Date == "2015-07-01")].iloc[0]
    assert first.State == "HE" and first.Max_TemperatureC == 20 and first.trend == 60 and first.trend_DE == 50
    assert first.CompetitionMonthsOpen == (pd.Timestamp("2015-07-01") - pd.Timestamp("2015-03-15")).days // 30
    assert first.days_until_Promo == 2 and first.days_since_Promo == -1 and first.days_until_StateHoliday == 5
    second = frame[(frame.Store == 2) & (frame.Date == "2015-07-10")].iloc[0]
    assert second.trend == 71 and second.Promo2Weeks == 2 and second.CompetitionMonthsOpen == 24
    assert second.days_since_Promo == 6 and second.days_since_SchoolHoliday == 1

    config = sales_tabular.get_config("rossmann")
    config.data.path, config.data.valid_days = str(tmp_path), 3
    data = dataset.load_table(config)
    assert len(data.valid["target"]) == 6 and len(data.train["target"]) == 13
    assert "Store" in data.prep.cat_names and "trend_DE" in data.prep.cont_names and data.prep.log_target
