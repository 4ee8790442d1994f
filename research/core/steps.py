"""One train/eval/predict step builder for every task: a `Task` says how the model is called and what its
loss and metrics are; the steps here do the rest (gradients, BatchNorm statistics, a recurrent carry).

Metrics are sums with a `count` (scenic's convention), so that any number of batches, and padded evaluation
batches (`mask` marks the real rows), combine exactly: a plain mean is sum / count, and a metric that is not a
mean (RMSE, perplexity, IoU) is computed from the sums at the end by the task's `finish`.
"""

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from research.core import optimizers
from research.core.train_state import TrainState


def means(summed: dict) -> dict[str, float]:
    """{name: sum} with a "count" entry -> {name: sum / count}."""
    count = float(summed["count"])
    return {k: float(v) / count for k, v in summed.items() if k != "count"}


class Task(NamedTuple):
    """What a task adds to the generic steps.

    inputs(batch) -> the model's positional inputs, e.g. `(batch["image"],)` or `(batch["user"], batch["item"])`.
    loss(outputs, batch) -> the scalar training loss (a mean over the batch; add regularisers here).
    metrics(outputs, batch, mask_B) -> {name: sum over the rows where mask_B, ..., "count": number of rows}.
    finish(summed over a whole dataset) -> final metrics; `means` unless a metric is not a plain mean.
    """
    inputs: Callable[[dict], tuple]
    loss: Callable[[Any, dict], jax.Array]
    metrics: Callable[[Any, dict, jax.Array], dict[str, jax.Array]]
    finish: Callable[[dict], dict[str, float]] = means


def batch_size_of(batch: dict) -> int:
    return jax.tree.leaves(batch)[0].shape[0]


def _apply(state: TrainState, params, task: Task, batch: dict, train: bool, rng: jax.Array | None = None):
    """(outputs, batch_stats, carry) of the model on `batch`. A state with a `carry` (recurrent state carried
    across batches) passes it as `carry=` and the model returns `(outputs, new_carry)`."""
    variables = {"params": params} if state.batch_stats is None else {"params": params, "batch_stats": state.batch_stats}
    kwargs = {} if state.carry is None else {"carry": state.carry}
    if train:
        out, updates = state.apply_fn(variables, *task.inputs(batch), train=True, mutable=["batch_stats"],
                                      rngs={"dropout": rng}, **kwargs)
        batch_stats = updates.get("batch_stats", state.batch_stats)
    else:
        out, batch_stats = state.apply_fn(variables, *task.inputs(batch), train=False, **kwargs), state.batch_stats
    if state.carry is None:
        return out, batch_stats, None
    outputs, carry = out
    return outputs, batch_stats, jax.lax.stop_gradient(carry)


def make_train_step(task: Task, frozen: Sequence[str] = ()) -> Callable:
    """`train_step(state, batch, rng) -> (state, summed metrics)`: one gradient step on `task.loss`.

    `frozen`: regexes of parameter paths (the optimizer's `frozen`) held constant by `stop_gradient`: their
    gradient is zero without being computed, so the backward pass stops at the lowest trainable layer (a head
    on a frozen body costs a forward pass through the body, not a backward one). The metrics also hold
    `grad_norm` (of the trainable parameters; times count, so that its mean over steps is the mean norm)."""

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        is_frozen = optimizers.frozen_mask(frozen, state.params)

        def loss_fn(params):
            params = jax.tree.map(lambda f, p: jax.lax.stop_gradient(p) if f else p, is_frozen, params)
            outputs, batch_stats, carry = _apply(state, params, task, batch, True, rng)
            return task.loss(outputs, batch), (outputs, batch_stats, carry)

        (_, (outputs, batch_stats, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        if carry is not None:
            new_state = new_state.replace(carry=carry)
        metrics = task.metrics(outputs, batch, jnp.ones(batch_size_of(batch), jnp.float32))
        metrics["grad_norm"] = optax.tree.norm(grads) * metrics["count"]
        return new_state, metrics

    return train_step


def make_eval_step(task: Task, outputs_fn: Callable | None = None) -> Callable:
    """`eval_step(state, batch) -> summed metrics` in eval mode over the rows where `batch["mask"]` (all rows
    when the batch has no mask). `outputs_fn(state, batch)`: the outputs scored instead of the model's own
    (e.g. test-time augmented ones)."""

    def eval_step(state: TrainState, batch: dict) -> dict[str, jax.Array]:
        outputs = outputs_fn(state, batch) if outputs_fn else _apply(state, state.params, task, batch, False)[0]
        mask_B = batch.get("mask", jnp.ones(batch_size_of(batch), bool))
        return task.metrics(outputs, batch, mask_B.astype(jnp.float32))

    return eval_step


def make_predict(task: Task) -> Callable:
    """`predict(state, batch) -> outputs` in eval mode (logits for the classifiers)."""

    def predict(state: TrainState, batch: dict):
        return _apply(state, state.params, task, batch, False)[0]

    return predict
