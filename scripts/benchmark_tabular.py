"""The tabular defaults against the tree baselines on six real tables that ship offline, in one run:

  .venv/bin/python scripts/benchmark_tabular.py --workdir runs/benchmark_tabular [--part valid|test]
      [--tables penguins,mpg] [--splits 5] [--set model.numeric=none --set ensemble=1 ...]

Each table goes through the structured-data experiment (experiments/sales_tabular.py) as a user's table does:
a CSV path and its target column, nothing else (breast_cancer's 0/1 target is classification by the
experiment's own rule), with HistGradientBoosting and RandomForest fitted in the same run on the same split
and features, each with its small validation grid. Tables under 5k rows are split at random (60% train, 20%
validation, 20% test) with seeds 0..splits-1 and averaged, since one small test part is too noisy to rank
models; txhousing keeps its time split (the last 12 months test, the 12 before validate; each city's sales 24
and 36 months before as inputs, since 12 would reach into the test year).

  txhousing      regression `sales` of a city-month (the experiment's default preset), 8.6k rows
  penguins       classification `species` (Palmer penguins), 344 rows
  diabetes       regression `target`, disease progression after a year (scikit-learn's), 442 rows
  breast_cancer  classification `target`, malignant or benign (scikit-learn's), 569 rows
  mpg            regression `hwy`, highway miles per gallon (`cty`, the same measurement in town, left out), 234 rows
  midwest        classification `inmetro` of a county (its id, name and `category`, which encodes inmetro, left out),
                 437 rows

--part valid (what the defaults are tuned on) fits and scores nothing on the test rows; --part test scores
them once with what validation chose. `--set KEY=VALUE` overrides the experiment's config (the ablations in
docs/tabular.md). `--rows N` instead draws N rows of one table with replacement and times the whole command
(the 50k-row check; scores meaningless, since drawn rows repeat across splits). `--ensemble_timing` times
the ensemble trained as one program against its members trained one after another (compilation included in
both, as a user pays it).
Writes WORKDIR/benchmark.json and prints one markdown table (the net's metric, the better tree's, their ratio,
wall seconds).
"""

import ast
import json
import os
import time

import numpy as np
import pandas as pd
from absl import app, flags

from experiments import sales_tabular
from research.tabular.table import read_wheel_csv

_WORKDIR = flags.DEFINE_string("workdir", "runs/benchmark_tabular", "Where the tables and runs go.")
_PART = flags.DEFINE_enum("part", "valid", ["valid", "test"], "Score validation only, or the test parts too.")
_TABLES = flags.DEFINE_list("tables", ["txhousing", "penguins", "diabetes", "breast_cancer", "mpg", "midwest"],
                            "Tables to run.")
_SPLITS = flags.DEFINE_integer("splits", 5, "Random splits of each table under 5k rows.")
_SET = flags.DEFINE_multi_string("set", [], "KEY=VALUE config overrides (dotted keys), e.g. model.numeric=none.")
_ROWS = flags.DEFINE_integer("rows", 0, "> 0: time the whole command on this many rows drawn from the table.")
_ENSEMBLE_TIMING = flags.DEFINE_bool("ensemble_timing", False, "Time the default ensemble as one program against "
                                     "its members trained one after another, on the first table.")

SMALL_TABLE = 5000


def _sklearn_frame(name: str) -> pd.DataFrame:
    from sklearn import datasets
    loader = {"diabetes": datasets.load_diabetes, "breast_cancer": datasets.load_breast_cancer}[name]
    return loader(as_frame=True).frame


def table(name: str) -> tuple[pd.DataFrame, str]:
    """(frame, target column) of a benchmark table, its left-out columns dropped."""
    if name == "penguins":
        return read_wheel_csv("penguins"), "species"
    if name in ("diabetes", "breast_cancer"):
        return _sklearn_frame(name), "target"
    if name == "mpg":
        return read_wheel_csv("mpg").drop(columns=["cty"]), "hwy"
    if name == "midwest":
        return read_wheel_csv("midwest").drop(columns=["PID", "county", "category"]), "inmetro"
    raise ValueError(f"unknown table {name!r}")


def apply_overrides(config, overrides: list[str]):
    """`KEY=VALUE` strings applied to the config (values read as Python literals, else as text)."""
    for override in overrides:
        key, _, text = override.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *parents, last = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[last] = value
    return config


def table_config(name: str, csv_path: str, target: str, seed: int, score_test: bool):
    """The experiment's config for one run on one table."""
    config = sales_tabular.get_config()
    if name == "txhousing":  # the test year is 12 months further ahead: lags of 24 and 36 months, not 12 and 24
        config.data.update(test_months=12, target_lags="24,36")
    else:
        config.data.update(path=csv_path, target=target, valid_by="random", valid_fraction=0.2, test_fraction=0.2)
    config.seed = seed
    config.score_test = score_test
    config.interpret = False
    return apply_overrides(config, _SET.value)


def headline(results: dict, part: str) -> dict[str, float]:
    """The net's and each tree's main number on `part`: RMSE for regression, accuracy for classification."""
    metrics, trees = results["metrics"], results["baselines"]
    key = f"{part}_rmse" if f"{part}_rmse" in metrics else f"{part}_accuracy"
    found = {"net": metrics[key], "metric": key.split("_", 1)[1]}
    found.update({name: scores[key] for name, scores in trees.items()})
    if f"{part}_log_loss" in metrics:
        found["net_log_loss"] = metrics[f"{part}_log_loss"]
        found.update({f"{name}_log_loss": scores[f"{part}_log_loss"] for name, scores in trees.items()})
    found["net_seconds"] = results["timings"].get("train", 0.0) + results["timings"].get("lr_find", 0.0)
    found["trees_seconds"] = results["timings"].get("baselines", 0.0)
    found["seconds"] = results["timings"]["total"]
    return found


def run_table(name: str, workdir: str, part: str, splits: int) -> dict:
    """Mean (and spread) of the headline numbers over the table's splits."""
    csv_path, target = "", ""
    if name != "txhousing":
        frame, target = table(name)
        os.makedirs(os.path.join(workdir, "tables"), exist_ok=True)
        csv_path = os.path.join(workdir, "tables", f"{name}.csv")
        frame.to_csv(csv_path, index=False)
        splits = splits if len(frame) < SMALL_TABLE else 1
    else:
        splits = 1
    runs = []
    for seed in range(splits):
        config = table_config(name, csv_path, target, seed, part == "test")
        results = sales_tabular.train_and_evaluate(config, os.path.join(workdir, "runs", name, f"split_{seed}"))
        runs.append(headline(results, part))
    numbers = [k for k in runs[0] if k != "metric"]
    summary = {"metric": runs[0]["metric"], "splits": splits}
    summary.update({k: float(np.mean([r[k] for r in runs])) for k in numbers})
    summary.update({f"{k}_std": float(np.std([r[k] for r in runs])) for k in ("net", "hist_gradient_boosting",
                                                                             "random_forest") if k in runs[0]})
    summary["per_split"] = runs
    return summary


def verdict(summary: dict) -> tuple[float, str]:
    """(net against the better tree, in the metric's sense: RMSE ratio or accuracy difference in points, its text)."""
    trees = [summary["hist_gradient_boosting"], summary["random_forest"]]
    if summary["metric"] == "rmse":
        ratio = summary["net"] / min(trees)
        return ratio, f"{ratio:.3f}x"
    gap = 100 * (summary["net"] - max(trees))
    return gap, f"{gap:+.1f} pt"


def time_rows(name: str, workdir: str, rows: int) -> None:
    frame, target = table(name)
    drawn = frame.sample(n=rows, replace=True, random_state=0).reset_index(drop=True)
    os.makedirs(workdir, exist_ok=True)
    csv_path = os.path.join(workdir, f"{name}_{rows}.csv")
    drawn.to_csv(csv_path, index=False)
    config = sales_tabular.get_config()
    config.data.update(path=csv_path, target=target)
    apply_overrides(config, _SET.value)
    started = time.time()
    results = sales_tabular.train_and_evaluate(config, os.path.join(workdir, f"run_{name}_{rows}"))
    seconds = time.time() - started
    print(f"{name} drawn to {rows} rows x {drawn.shape[1]} columns: whole run {seconds:.1f} s "
          f"(timings {results['timings']})")


def time_ensemble(name: str, workdir: str) -> None:
    """Seconds to train the config's K members as one vmapped program and as K runs one after another, from
    scratch in fresh workdirs, on the table's first split."""
    from research.core import experiment, seeds, sharding
    from research.tabular import dataset, ensemble, recipe
    csv_path, target = "", ""
    if name != "txhousing":
        frame, target = table(name)
        os.makedirs(workdir, exist_ok=True)
        csv_path = os.path.join(workdir, f"{name}.csv")
        frame.to_csv(csv_path, index=False)
    config = table_config(name, csv_path, target, 0, False)
    mesh = sharding.make_mesh(1)
    data = dataset.load_table(config)
    run = recipe.setup_on(config, mesh, data)
    num_steps = recipe.num_steps_for(config, run.batches.steps_per_epoch)
    members = ensemble.members(config)
    started = time.time()
    seeds.fit(config, os.path.join(workdir, "stacked"), run, members, config.learning_rate, mesh,
              num_steps=num_steps, checkpoint_every=num_steps)
    stacked = time.time() - started
    started = time.time()
    for seed in members.seeds:
        member_config = config.copy_and_resolve_references()
        member_config.seed = seed
        member_config.checkpoint.every_epochs = num_steps  # one checkpoint at the end, as the stacked run
        experiment.fit(member_config, os.path.join(workdir, f"single_{seed}"),
                       recipe.setup_on(member_config, mesh, data), config.learning_rate, mesh, num_steps=num_steps)
    sequential = time.time() - started
    print(f"{name}: {members.size} members x {num_steps} steps of {run.batches.batch_size} rows: one program "
          f"{stacked:.1f} s, one after another {sequential:.1f} s, ratio {sequential / stacked:.2f}x")


def main(argv):
    del argv
    workdir = _WORKDIR.value
    if _ENSEMBLE_TIMING.value:
        time_ensemble(_TABLES.value[0], workdir)
        return
    if _ROWS.value:
        time_rows(_TABLES.value[0], workdir, _ROWS.value)
        return
    part = _PART.value
    found = {}
    for name in _TABLES.value:
        found[name] = run_table(name, workdir, part, _SPLITS.value)
        with open(os.path.join(workdir, "benchmark.json"), "w") as f:
            json.dump({"part": part, "overrides": _SET.value, "tables": found}, f, indent=2)
    print(f"\n{part} part, overrides {_SET.value or 'none'}")
    print("| table | metric | net | HistGradientBoosting | RandomForest | net vs better tree | net s | trees s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in found.items():
        if "hist_gradient_boosting" not in s:  # --set baselines=False
            print(f"| {name} | {s['metric']} | {s['net']:.4f} | | | | {s['net_seconds']:.0f} | |")
            continue
        _, text = verdict(s)
        print(f"| {name} | {s['metric']} | {s['net']:.4f} | {s['hist_gradient_boosting']:.4f} | "
              f"{s['random_forest']:.4f} | {text} | {s['net_seconds']:.0f} | {s['trees_seconds']:.0f} |")


if __name__ == "__main__":
    app.run(main)
