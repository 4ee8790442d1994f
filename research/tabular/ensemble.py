"""The tabular net as an ensemble: member K is the run with seed `config.seed + K` (its own initialisation,
data order and dropout) in workdir/member_K, or the workdir itself for a single net; their predictions are
averaged in model units (class probabilities for classification) and scored with the task's metric sums."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research.core import evaluation, steps
from research.core.errors import InputError
from research.tabular import task as tabular_task
from research.tabular.preprocessing import Preprocessing


def members(config, workdir: str) -> list[tuple[int, str]]:
    """(seed, workdir) of each member of the ensemble: the workdir itself for a single net."""
    if config.ensemble < 1:
        raise InputError(f"ensemble={config.ensemble}: the net needs at least one member")
    if config.ensemble == 1:
        return [(config.seed, workdir)]
    return [(config.seed + k, os.path.join(workdir, f"member_{k}")) for k in range(config.ensemble)]


def with_seed(config, seed: int) -> ml_collections.ConfigDict:
    member_config = config.copy_and_resolve_references()
    member_config.seed = seed
    return member_config


def outputs(states, prep: Preprocessing, arrays: dict, config, mesh) -> np.ndarray:
    """Model-unit predictions (N) or class probabilities (N x K) of the rows in `arrays`, averaged over the
    ensemble's members' states."""
    inputs = {"cat": arrays["cat"], "cont": arrays["cont"]}
    batch_size = min(config.eval_batch_size, max(len(arrays["cat"]), 1))

    def one(member_state):
        predict = steps.make_predict(tabular_task.task(prep.task, prep.log_target))
        outputs_N = evaluation.predict_outputs(predict, member_state, inputs, batch_size, mesh)
        return outputs_N.reshape(-1) if prep.task == "regression" else np.asarray(jax.nn.softmax(outputs_N, -1))

    return np.mean([one(state) for state in states], axis=0)


def scores(task: steps.Task, prep: Preprocessing, outputs_of, arrays: dict, prefix: str) -> dict[str, float]:
    """The task's metrics (and AUC for a binary target) of the averaged outputs `outputs_of(arrays)`."""
    predicted = outputs_of(arrays)
    as_model_output = predicted if prep.task == "regression" else np.log(np.clip(predicted, 1e-12, 1.0))
    summed = task.metrics(jnp.asarray(as_model_output), arrays, np.ones(len(arrays["target"]), np.float32))
    metrics = {prefix + k: v for k, v in task.finish(jax.device_get(summed)).items()}
    if prep.task == "classification" and len(prep.classes) == 2:
        metrics[prefix + "auc"] = tabular_task.binary_auc(predicted, arrays["target"])
    return metrics
