"""Predictions of a trained run for new data:
  .venv/bin/python scripts/predict.py --workdir runs/fashion_mnist --input DIR_OR_CSV --output predictions.csv

Reads the run's experiment and config (workdir/run.json, written by scripts/train.py), restores its best
checkpoint, applies the preprocessing saved with it and writes the experiment's predictions (images: a CSV of
file, predicted class, probability, top 3; other tasks: their own outputs). Unreadable inputs are named in one
`error:` line after the others are written, and the exit status is 1.
"""

import os
import sys

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory.")
_INPUT = flags.DEFINE_string("input", None, "New data: a folder or a CSV (what the experiment reads).")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the predictions (default: WORKDIR/predictions.csv; "
                               "a folder, WORKDIR/predictions, for experiments that write files such as masks).")
flags.mark_flags_as_required(["workdir", "input"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from research.core import compile_cache
    compile_cache.enable()  # before anything compiles
    import ml_collections
    from research.core import inference
    from research.core.errors import InputError
    from scripts.experiment_file import load_experiment  # after sys.path holds the repository root
    output = _OUTPUT.value or os.path.join(_WORKDIR.value, "predictions.csv")
    try:
        experiment_file, config = inference.read_run_info(_WORKDIR.value)
        experiment = load_experiment(experiment_file)
        config = ml_collections.ConfigDict(config)
        folder = experiment.CAPABILITIES.predict_writes_folder  # files in a folder, their list beside them
        if folder:
            output = _OUTPUT.value or os.path.join(_WORKDIR.value, "predictions")
        table = os.path.join(output, "predictions.csv") if folder else output
        try:
            rows = (experiment.predict(config, _WORKDIR.value, _INPUT.value, output) if folder
                    else experiment.predict(config, _WORKDIR.value, _INPUT.value))
        except inference.PartialPredictions as e:  # the readable inputs' predictions first, then the error
            inference.write_csv(table, e.rows)
            raise
        inference.write_csv(table, rows)
    except InputError as e:
        sys.exit(f"error: {e}")
    print(f"{len(rows)} predictions written to {output}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
