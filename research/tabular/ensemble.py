"""The tabular net as an ensemble trained as ONE program: K members stacked on a leading axis
(research/core/seeds.py), member k being exactly the single run with seed `config.seed + k` (its own
initialisation, data order and dropout), all K stepped by one vmapped, compiled step. Their predictions are
averaged in model units (class probabilities for classification) and scored with the task's metric sums.

K members cost far less than K runs on a CPU: one compilation instead of K, and each step's K small matmuls
run as one batched matmul (docs/tabular.md measures both)."""

import jax
import jax.numpy as jnp
import numpy as np

from research.core import evaluation, seeds, steps
from research.core.errors import InputError
from research.tabular import task as tabular_task
from research.tabular.preprocessing import Preprocessing


def members(config) -> seeds.Members:
    """The ensemble's members: seeds config.seed .. config.seed + config.ensemble - 1."""
    if config.ensemble < 1:
        raise InputError(f"ensemble={config.ensemble}: the net needs at least one member")
    return seeds.seed_range(config.seed, config.ensemble)


def averaged(outputs_KxB, kind: str) -> jax.Array:
    """The members' outputs averaged: predictions (B) for regression, class probabilities (B x C) otherwise."""
    if kind == "regression":
        return jnp.mean(outputs_KxB.reshape(outputs_KxB.shape[0], -1), 0)
    return jnp.mean(jax.nn.softmax(outputs_KxB, -1), 0)


def as_model_output(averaged_outputs, kind: str):
    """What the task's metric sums take: predictions, or log-probabilities for classification."""
    return averaged_outputs if kind == "regression" else jnp.log(jnp.clip(averaged_outputs, 1e-12, 1.0))


def member_outputs(predict_one, states, batch):
    """K x B x ... outputs of each member on the same batch: `predict_one` vmapped over the stacked parameters
    and BatchNorm statistics (the rest of the state, e.g. a restored one's step, need not be stacked)."""
    def one(params, batch_stats):
        return predict_one(states.replace(params=params, batch_stats=batch_stats), batch)

    return jax.vmap(one)(states.params, states.batch_stats)


def make_predict(kind: str, log_target: bool):
    """`predict(states, batch) -> averaged outputs` of the stacked members, in evaluation mode."""
    one = steps.make_predict(tabular_task.task(kind, log_target))
    return lambda states, batch: averaged(member_outputs(one, states, batch), kind)


def make_evaluator(prep: Preprocessing, arrays: dict, batch_size: int, mesh, prefix: str = "valid_"):
    """`evaluate(states) -> {prefix + metric: the ensemble's, prefix + metric + "_member_mean": the members'
    mean}` over every row of `arrays`, in one compiled program per batch shape."""
    task = tabular_task.task(prep.task, prep.log_target)
    one = steps.make_predict(task)

    def eval_step(states, batch):
        outputs_KxB = member_outputs(one, states, batch)
        mask_B = batch["mask"].astype(jnp.float32)
        ensemble = task.metrics(as_model_output(averaged(outputs_KxB, prep.task), prep.task), batch, mask_B)
        each = jax.vmap(lambda outputs: task.metrics(outputs, batch, mask_B))(outputs_KxB)
        return {"ensemble": ensemble, "members": each}

    def finish(summed):
        done = task.finish(summed["ensemble"])
        num_members = len(summed["members"]["count"])
        per_member = [task.finish(jax.tree.map(lambda x: x[k], summed["members"])) for k in range(num_members)]
        if num_members > 1:
            done.update({f"{k}_member_mean": float(np.mean([m[k] for m in per_member])) for k in per_member[0]})
        return done

    inputs = {k: arrays[k] for k in ("cat", "cont", "target")}
    return evaluation.make_evaluator(eval_step, inputs, min(batch_size, max(len(arrays["target"]), 1)), mesh,
                                     prefix=prefix, finish=finish)


def outputs(states, prep: Preprocessing, arrays: dict, config, mesh) -> np.ndarray:
    """The ensemble's averaged predictions (N) or class probabilities (N x C) of the rows in `arrays`."""
    inputs = {"cat": arrays["cat"], "cont": arrays["cont"]}
    batch_size = min(config.eval_batch_size, max(len(arrays["cat"]), 1))
    return evaluation.predict_outputs(make_predict(prep.task, prep.log_target), states, inputs, batch_size, mesh)


def scores(prep: Preprocessing, outputs_of, arrays: dict, prefix: str) -> dict[str, float]:
    """The task's metrics (and AUC for a binary target) of the averaged outputs `outputs_of(arrays)`."""
    task = tabular_task.task(prep.task, prep.log_target)
    predicted = outputs_of(arrays)
    summed = task.metrics(as_model_output(jnp.asarray(predicted), prep.task), arrays,
                          np.ones(len(arrays["target"]), np.float32))
    metrics = {prefix + k: v for k, v in task.finish(jax.device_get(summed)).items()}
    if prep.task == "classification" and len(prep.classes) == 2:
        metrics[prefix + "auc"] = tabular_task.binary_auc(predicted, arrays["target"])
    return metrics
