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

Reaches (default preset): validation exp-RMSPE 0.1310 for the net (an ensemble of 4 trained as one program,
800 steps; its members alone 0.1371 on average), HistGradientBoosting 0.1316 and RandomForest 0.1550 on the same
split and features. On the six tables of scripts/benchmark_tabular.py (test parts, docs/tabular.md) it beats
the better tree on txhousing, diabetes and mpg, ties within a point on penguins and breast_cancer, and is 3
points behind RandomForest on midwest.
"""

import ml_collections

from research.core import configs, experiment
from research.tabular import dataset, recipe

CAPABILITIES = experiment.Capabilities()


def get_config(preset: str = "txhousing") -> ml_collections.ConfigDict:
    configs.check_preset(preset, ("txhousing", "rossmann"), "experiments/sales_tabular.py")
    c = configs.base()
    c.data = dataset.data_config()
    c.model = ml_collections.ConfigDict(dict(
        hidden=(256, 256, 256), dropouts=(0.0, 0.0, 0.0), embedding_dropout=0.0, batch_norm=False,
        numeric_bins=16, numeric_dim=8,  # piecewise-linear embeddings of the continuous inputs (0 bins: none)
        y_range_margin=0.2))  # regression: the output squashed into the training range widened by this
    c.learning_rate = 2e-3  # 0 runs the range test
    c.optimizer.weight_decay = 0.01
    # > 0: classification trains on smoothed targets (penguins validation: the same accuracy with 0.1, but log
    # loss 0.090 against 0.007 without)
    c.label_smoothing = 0.0
    # The budget follows the table: batch_size rows a step (halved for small tables until an epoch has at
    # least min_batches_per_epoch steps), num_epochs epochs, but at least min_steps and at most max_steps (where
    # a 50k-row table stops, so that its whole command fits in 3 minutes on the 2-core CPU).
    c.batch_size = 256
    c.min_batches_per_epoch = 8
    c.num_epochs = 40
    c.min_steps = 400
    c.max_steps = 800
    c.eval_batch_size = 2048
    c.evaluations = 8  # validation scores (and checkpoints) per run; the one with the lowest valid_loss is kept
    c.checkpoint.best_metric = "valid_loss"
    c.checkpoint.best_mode = "min"
    c.log_every = 100
    # the net is an ensemble of this many members, trained as one program: member k is the run with seed
    # seed + k (own initialisation, data order and dropout); predictions averaged (model units; probabilities)
    c.ensemble = 4
    c.baselines = True
    c.score_test = True  # False: the test rows, when the split has them, are left unscored (tuning on validation)
    c.interpret = True
    if preset == "rossmann":
        c.data.update(rossmann=True, target="Sales", valid_days=48, valid_by="date", log_target=True,
                      task="regression")
        c.batch_size = 512
        c.eval_batch_size = 2048
        c.num_epochs = 3
        c.max_steps = 0
        c.learning_rate = 1e-3  # the course's rate for Rossmann
        c.ensemble = 1
    return c


def setup(config, mesh) -> experiment.Setup:
    return recipe.setup(config, mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop_at: int | None = None) -> dict:
    """The ensemble trained and scored beside the tree baselines; results.json, the preprocessing and the
    interpretation plots in workdir."""
    return recipe.train_and_evaluate(config, workdir, stop_at)


def predict(config: ml_collections.ConfigDict, workdir: str, input_path: str) -> list[dict]:
    """The rows of the CSV `input_path` with their `prediction` (and `probability` for a class)."""
    return recipe.predict(config, workdir, input_path)
