"""The training loop, task-agnostic: it knows a train step, a batch source, an evaluation function and a
workdir, never a loss or a model.

- `train_step(state, batch, rng) -> (state, metrics)` is jitted once with shardings over the mesh (state
  replicated, batch split on the data axis) and the state donated.
- Metrics are sums with a `count`; the loop accumulates them on device and logs their means.
- The host reads step t-1's metrics after dispatching step t, so the device never waits for Python.
- Checkpoints (orbax) at every `checkpoint_every` steps and at the end; a rerun with the same workdir
  resumes from the latest one. Batches are a pure function of the step (see `InMemoryImages`), so a resumed
  run equals an uninterrupted one.
"""

import os
from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import Mesh

from research import optimizers, sharding
from research.checkpoint import Checkpointer
from research.metric_writer import MetricWriter


class Preempted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint of the current step; rerun to resume."""


class NonFiniteError(FloatingPointError):
    """A train step produced a non-finite loss or gradient; nothing after the last good checkpoint was saved."""


class BatchSource(Protocol):
    steps_per_epoch: int

    def batch(self, step: int) -> dict: ...


def means(summed: dict) -> dict[str, float]:
    """{name: sum} with a "count" entry -> {name: sum / count}."""
    count = float(summed["count"])
    return {k: float(v) / count for k, v in summed.items() if k != "count"}


def jit_train_step(train_step: Callable, state, mesh: Mesh) -> Callable:
    state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    return jax.jit(train_step, donate_argnums=0,
                   in_shardings=(state_sharding, sharding.batch_sharded(mesh), sharding.replicated(mesh)),
                   out_shardings=(state_sharding, sharding.replicated(mesh)))


def train(*, state, train_step: Callable, batches: BatchSource, num_steps: int, mesh: Mesh, seed: int,
          workdir: str, evaluate: Callable[[object], dict[str, float]] | None = None,
          checkpoint_every: int | None = None, checkpoint_steps: Sequence[int] = (), log_every: int = 50,
          stop_at: int | None = None, meta: dict | None = None, progress: bool = True):
    """Trains to `num_steps` (or until `stop_at`, which simulates an interruption), resuming from `workdir`.

    Returns the final state. `evaluate(state) -> {name: value}` runs at each checkpoint and at the end.
    Checkpoints are written every `checkpoint_every` steps, at each step in `checkpoint_steps` (e.g. the ends
    of SGDR cycles) and at the end.
    """
    checkpoint_every = checkpoint_every or batches.steps_per_epoch
    checkpoint_steps = frozenset(int(s) for s in checkpoint_steps)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    writer = MetricWriter(workdir)
    state = jax.device_put(state, sharding.replicated(mesh))
    start = checkpointer.latest_step() or 0
    if start:
        state, _ = checkpointer.restore(start, state)
    stop = min(stop_at or num_steps, num_steps)
    step_fn = jit_train_step(train_step, state, mesh)
    rng = jax.random.key(seed)

    bar = tqdm.tqdm(total=num_steps, initial=start, disable=not progress or jax.process_index() != 0,
                    unit="step", dynamic_ncols=True)
    summed, previous = None, None
    for step in range(start, stop):
        state, metrics = step_fn(state, batches.batch(step), jax.random.fold_in(rng, step))
        if previous is not None:
            jax.block_until_ready(previous)  # keep the host one step ahead, not more
        previous = metrics
        summed = metrics if summed is None else jax.tree.map(jnp.add, summed, metrics)
        bar.update(1)
        done = step + 1
        if done % log_every == 0 or done == stop:
            scalars = {f"train_{k}": v for k, v in means(jax.device_get(summed)).items()}
            scalars["learning_rate"] = float(np.asarray(optimizers.current_learning_rate(state.opt_state)))
            writer.write(done, scalars)
            bar.set_postfix(loss=f"{scalars['train_loss']:.4f}", lr=f"{scalars['learning_rate']:.2e}")
            summed = None
        if done % checkpoint_every == 0 or done in checkpoint_steps or done == stop:
            if evaluate is not None:
                eval_scalars = evaluate(state)
                writer.write(done, eval_scalars)
                bar.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_scalars.items()))
            checkpointer.save(done, state, {"step": done, "epoch": done / batches.steps_per_epoch,
                                            **(meta or {})})
    bar.close()
    checkpointer.close()
    writer.close()
    return state
