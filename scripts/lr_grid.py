"""Checks the LR range test's suggestion against a grid: trains the experiment at each grid rate and at the
suggested rate, and prints their validation accuracies side by side (--metric: any key of results.json's
"metrics", higher is better).

  .venv/bin/python scripts/lr_grid.py --config experiments/fashion_mnist.py --workdir runs/lr_grid \
      --rates 1e-3,3e-3,1e-2,3e-2,1e-1,3e-1

Each run has its own workdir under --workdir (so an interrupted grid resumes); the table is also written to
DIR/lr_grid.json. Several hosts: the same command on every host with the --distributed flags of scripts/train.py.
"""

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from scripts import distributed_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file, experiments/NAME.py[:preset].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the runs and lr_grid.json.")
_RATES = flags.DEFINE_list("rates", ["1e-3", "3e-3", "1e-2", "3e-2", "1e-1", "3e-1"], "Grid of peak rates.")
_METRIC = flags.DEFINE_string("metric", "valid_accuracy", "Key of results.json's metrics to compare (higher is better).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from research.core import compile_cache
    compile_cache.enable()  # before anything compiles
    from research.core.errors import InputError
    from research.core.trainer import NonFiniteError, Preempted
    try:
        distributed_flags.start()
        run_grid()
    except (InputError, NonFiniteError) as e:
        sys.exit(f"error: {e}")
    except Preempted as e:  # SIGTERM: the current run's checkpoint is saved; a rerun resumes the grid
        print(f"preempted: {e}")


def run_grid():
    import jax
    from research.core import experiment as recipes, sharding
    from scripts.experiment_file import load_experiment  # after sys.path holds the repository root
    experiment = load_experiment(flags.FLAGS["config"].config_filename)
    config = _CONFIG.value
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    found = recipes.lr_find(config, os.path.join(_WORKDIR.value, "lr_find"), experiment.setup(config, mesh))
    suggested = found.suggestions[config.lr_find.suggestion]
    rows = []
    for label, rate in [(f"grid {r}", float(r)) for r in _RATES.value] + [
            (f"suggested ({config.lr_find.suggestion})", suggested)]:
        run_config = config.copy_and_resolve_references()
        run_config.learning_rate = rate
        results = experiment.train_and_evaluate(run_config, os.path.join(_WORKDIR.value, f"lr_{rate:.3g}"))
        rows.append({"run": label, "learning_rate": rate, **results["metrics"],
                     "train_seconds": results["timings"]["train"]})
        print(f"{label:>24}  lr={rate:.3g}  {_METRIC.value}={results['metrics'][_METRIC.value]:.4f}", flush=True)
    best = max(rows[:-1], key=lambda row: row[_METRIC.value])
    gap = best[_METRIC.value] - rows[-1][_METRIC.value]
    print(f"best of grid: lr={best['learning_rate']:.3g} {best[_METRIC.value]:.4f}; "
          f"suggested lr={suggested:.3g} {rows[-1][_METRIC.value]:.4f}; gap {gap:+.4f}")
    if jax.process_index() != 0:  # one writer
        return
    with open(os.path.join(_WORKDIR.value, "lr_grid.json"), "w") as f:
        json.dump({"rows": rows, "suggestions": found.suggestions, "gap_to_best": gap}, f, indent=2)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from scripts.experiment_file import parse_flags
    app.run(main, flags_parser=parse_flags)
