"""Using a finished run: its best weights restored for inference, the record of which experiment and config
made it (workdir/run.json), and prediction rows written as CSV."""

import csv
import dataclasses
import json
import os
from typing import Callable, Iterable

import jax
import ml_collections
import optax

from research.core.errors import InputError
from research.core.train_state import TrainState


class PartialPredictions(InputError):
    """Some inputs could not be read: `rows` holds the predictions for the others (written before the error)."""

    def __init__(self, message: str, rows: list[dict]):
        super().__init__(message)
        self.rows = rows


def restore_trained(workdir: str, state: TrainState, best_metric: str = "", best_mode: str = "max") -> TrainState:
    """`state` with the parameters and BatchNorm statistics of a run's best checkpoint by `best_metric` (a
    validation metric), else its latest, in workdir/checkpoints; the optimizer state is left as it is, so any
    optimizer will do (prediction, re-scoring). Shapes must match: a checkpoint of another model is an
    InputError naming the parameter."""
    from research.core.checkpoint import Checkpointer  # orbax only where a checkpoint is read
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), best_metric=best_metric or None,
                                best_mode=best_mode)
    try:
        step = checkpointer.best_step() or checkpointer.latest_step()
        if step is None:
            raise InputError(f"{workdir}/checkpoints holds no checkpoint: train the run first")
        variables = checkpointer.restore_variables(step)
    finally:
        checkpointer.close()
    like = {"params": state.params, "batch_stats": state.batch_stats}
    if jax.tree.structure(like) != jax.tree.structure(variables):
        raise InputError(f"checkpoint step {step} in {workdir} is from a different model (other parameters)")
    for (path, want), (_, got) in zip(jax.tree_util.tree_flatten_with_path(like)[0],
                                      jax.tree_util.tree_flatten_with_path(variables)[0]):
        if want.shape != got.shape:
            raise InputError(f"checkpoint step {step} in {workdir} is from a different model: "
                             f"{jax.tree_util.keystr(path)} has shape {got.shape}, this model {want.shape}")
    placed = jax.tree.map(lambda new, old: jax.device_put(new, getattr(old, "sharding", None)), variables, like)
    return state.replace(params=placed["params"], batch_stats=placed["batch_stats"])


def restore_for_inference(workdir: str, apply_fn: Callable, variables: dict, best_metric: str = "",
                          best_mode: str = "max") -> TrainState:
    """A TrainState for prediction: `variables` (a fresh `model.init`'s, for the shapes) replaced by the run's
    best checkpoint (`restore_trained`), with no optimizer (optax.identity)."""
    state = TrainState.create(apply_fn=apply_fn, params=variables["params"],
                              batch_stats=variables.get("batch_stats", {}), tx=optax.identity())
    return restore_trained(workdir, state, best_metric, best_mode)


def write_csv(path: str, rows: Iterable[dict]) -> int:
    """Writes prediction rows (dicts with the same keys) as a CSV with a header, quoting fields as needed (a file
    name with a comma or a quote stays one field). Returns the number of rows."""
    rows = list(rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        if not rows:
            return 0
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def save_record(path: str, record) -> None:
    """A dataclass saved beside a run's checkpoints (fitted preprocessing, index maps) as JSON, atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(dataclasses.asdict(record), f, indent=1)
    os.replace(path + ".tmp", path)


def load_record(cls, path: str):
    """The dataclass `cls` that `save_record` wrote to `path`; a missing file is an InputError."""
    if not os.path.exists(path):
        raise InputError(f"{path} does not exist: train the run first")
    with open(path) as f:
        return cls(**json.load(f))


def write_run_info(workdir: str, experiment_file: str, config: ml_collections.ConfigDict) -> None:
    """workdir/run.json: which experiment file and config made this run (scripts/predict.py reads it)."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "run.json"), "w") as f:
        json.dump({"experiment": experiment_file, "config": json.loads(config.to_json_best_effort())}, f, indent=2)


def read_run_info(workdir: str) -> tuple[str, dict]:
    """(experiment file, config dict) that `write_run_info` recorded for a run."""
    path = os.path.join(workdir, "run.json")
    if not os.path.exists(path):
        raise InputError(f"{path} does not exist: not a workdir of scripts/train.py")
    with open(path) as f:
        info = json.load(f)
    return info["experiment"], info["config"]
