"""Evaluation over a whole in-memory dataset (a dict of named arrays): padded batches with a mask, so every
example counts once, compiled once over the mesh."""

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from research.core import compile_check, sharding
from research.core.arrays import padded_batches
from research.core.steps import means
from research.core.train_state import TrainState

Prepare = Callable[[dict], dict]  # a batch -> the model's batch (e.g. normalised images), inside jit


def make_evaluator(eval_step: Callable, arrays: dict[str, np.ndarray], batch_size: int, mesh: Mesh,
                   prepare: Prepare | None = None, prefix: str = "valid_",
                   finish: Callable[[dict], dict] = means) -> Callable[[object], dict[str, float]]:
    """Returns `evaluate(state) -> {prefix + name: value}`: the task's summed metrics over every row of
    `arrays`, then `finish` (the task's: means, or RMSE, IoU, ... from the sums).

    The model (`state.apply_fn`) is a static argument of the compiled step, so each model evaluated (e.g. the
    frozen-body model of fine-tuning's head phase, then the whole model) gets its own step, compiled once; the
    optimizer is dropped first (evaluation never reads it), so states differing only in it share a step."""
    sharding.check_batch_divides(batch_size, mesh, "eval_batch_size")
    prepare = prepare or (lambda batch: batch)
    steps_by_model = {}

    def evaluate(state) -> dict[str, float]:
        if isinstance(state, TrainState):
            state = state.replace(tx=None, opt_state=None)
        model = getattr(state, "apply_fn", None)
        if model not in steps_by_model:
            steps_by_model[model] = _jit_on_mesh(lambda state, batch: eval_step(state, prepare(batch)), mesh)
        step = steps_by_model[model]
        total = None
        for batch in padded_batches(arrays, batch_size):
            metrics = step(state, batch)
            total = metrics if total is None else jax.tree.map(lambda a, b: a + b, total, metrics)
        return {prefix + k: v for k, v in finish(jax.device_get(total)).items()}

    return evaluate


def predict_outputs(predict: Callable, state, arrays: dict[str, np.ndarray], batch_size: int, mesh: Mesh,
                    prepare: Prepare | None = None) -> np.ndarray:
    """`predict(state, batch)` over every row of `arrays` (N x ...), the padding dropped."""
    prepare = prepare or (lambda batch: batch)
    step = _jit_on_mesh(lambda state, batch: predict(state, prepare(batch)), mesh)
    return np.concatenate([np.asarray(step(state, batch))[batch["mask"]]
                           for batch in padded_batches(arrays, batch_size)])


def _jit_on_mesh(fn: Callable, mesh: Mesh) -> Callable:
    """`fn(state, batch)` jitted for `mesh`, called with a host (numpy) batch that every process holds.

    The batch becomes a global array split over all devices (each process copies only its own devices' rows),
    the state keeps its shardings (replicated or split over fsdp), and the outputs are replicated, so every
    process can read them, with one or several processes."""
    jitted = jax.jit(fn, out_shardings=sharding.replicated(mesh))
    compile_check.record("eval", jitted)
    batch_sharding = sharding.batch_sharded(mesh)

    def step(state, batch):
        return jitted(state, jax.tree.map(lambda x: sharding.host_to_global(x, batch_sharding), batch))

    return step
