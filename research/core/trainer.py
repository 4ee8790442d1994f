"""The training loop, task-agnostic: it knows a train step, a batch source, an evaluation function and a
workdir, never a loss or a model.

- `train_step(state, batch, rng) -> (state, metrics)` is jitted once with shardings over the mesh and the
  state donated.
- Metrics are sums with a `count`; the loop accumulates them on device and logs their means.
- The host reads step t-1's metrics after dispatching step t, so the device never waits for Python; that
  read also checks them: the first non-finite loss or gradient norm stops training (or, with
  `skip_nonfinite`, such steps are skipped and counted) and no non-finite state is ever saved.
- Fault tolerance: asynchronous orbax checkpoints (see `research.checkpoint`) on a schedule and at the end;
  a rerun with the same workdir resumes from the latest good one. Batches and step RNGs are pure functions
  of (seed, step) (see `research.data.arrays`), so the step is the whole data position and a resumed run equals an
  uninterrupted one bit for bit. On SIGTERM (preemption) the loop finishes the current step, saves it,
  waits for the write and raises `Preempted`; scripts exit 0.
- Members (research/seeds.py): with `members=` names, the state holds K runs stacked on a leading axis and
  `train_step` is one member's step, vmapped here (the non-finite guard acts per member); the members are
  split over the devices, and every metric is logged per member (`train_loss/seed3`) and as their mean.
"""

import json
import math
import os
import signal
import threading
from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from research.core import compile_check, optimizers, sharding
from research.core.checkpoint import Checkpointer
from research.core.errors import InputError
from research.core.metric_writer import MetricWriter
from research.core.steps import means


class Preempted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint of the current step; rerun to resume."""


class NonFiniteError(FloatingPointError):
    """A train step produced a non-finite loss or gradient; nothing after the last good checkpoint was saved."""


class BatchSource(Protocol):
    steps_per_epoch: int

    def batch(self, step: int) -> dict: ...


def jit_train_step(train_step: Callable, state, mesh: Mesh, members: bool = False) -> Callable:
    """`train_step` jitted once for `mesh`: the state donated and sharded by `sharding.state_shardings`
    (replicated, large leaves split over the fsdp axis), the batch split over all devices, the rng and the
    metrics replicated (so every process can read them). With `members`, `train_step` is one member's step,
    vmapped over the stacked state and batch (the rng shared), and the members are split over the devices."""
    state_sharding = _state_shardings(state, mesh, members)
    if members:
        train_step = jax.vmap(train_step, in_axes=(0, 0, None))
    return jax.jit(train_step, donate_argnums=0,
                   in_shardings=(state_sharding, sharding.batch_sharded(mesh), sharding.replicated(mesh)),
                   out_shardings=(state_sharding, sharding.replicated(mesh)))


def train(*, state, train_step: Callable, batches: BatchSource, num_steps: int, mesh: Mesh, seed: int,
          workdir: str, evaluate: Callable[[object], dict[str, float]] | None = None,
          checkpoint_every: int | None = None, checkpoint_steps: Sequence[int] = (), log_every: int = 50,
          stop_at: int | None = None, meta: dict | None = None, progress: bool = True, keep_checkpoints: int = 2,
          best_metric: str | None = None, best_mode: str = "max", skip_nonfinite: bool = False,
          members: Sequence[str] = ()):
    """Trains to `num_steps` (or until `stop_at`, which simulates an interruption), resuming from `workdir`.

    Returns the final state. `evaluate(state) -> {name: value}` runs at each scheduled checkpoint and at the
    end. Checkpoints are written every `checkpoint_every` steps, at each step in `checkpoint_steps` (e.g. the
    ends of SGDR cycles) and at the end; the last `keep_checkpoints` are kept, plus the best by the evaluation
    metric `best_metric` (`best_mode` "max" or "min"). Step N means "after N updates" everywhere (checkpoints,
    logs, messages). The checkpoint's JSON holds the step, epoch, seed and `meta` (e.g. the config).

    Raises `Preempted` after saving the current step on SIGTERM; `NonFiniteError` at the first step with a
    non-finite metric (loss, grad_norm) unless `skip_nonfinite`, which instead leaves the state unchanged for
    such steps and counts them (`skipped_steps` in the log and the checkpoint); `InputError` when the
    workdir's checkpoint belongs to a different model.

    `members`: names of the K runs stacked in `state` (research/seeds.py); `train_step` is then one member's
    step and the batch source gives every member's batch on a leading axis. `evaluate` returns flat scalars
    (research/seeds.evaluator: the mean over members and one per member); `best_metric` ranks their mean.
    """
    checkpoint_every = checkpoint_every or batches.steps_per_epoch
    checkpoint_steps = frozenset(int(s) for s in checkpoint_steps)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep_checkpoints, best_metric, best_mode)
    members = tuple(members)
    state = jax.device_put(state, _state_shardings(state, mesh, bool(members)))
    start, skipped = 0, 0
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        state, saved = restored
        start, skipped = int(saved["step"]), int(saved.get("skipped_steps", 0))
    _drop_logged_after(workdir, start)
    writer = MetricWriter(workdir)
    stop = min(stop_at or num_steps, num_steps)
    step_fn = jit_train_step(guard_nonfinite(train_step, skip_nonfinite), state, mesh, bool(members))
    compile_check.record("train", step_fn)
    rng = jax.random.key(seed)
    record = {"seed": seed, "steps_per_epoch": batches.steps_per_epoch, **(meta or {})}

    def check(done: int, metrics) -> None:
        """Blocks until step `done` has run; stops training if it produced a non-finite metric."""
        if skip_nonfinite:
            jax.block_until_ready(metrics)
            return
        metrics = jax.device_get(metrics)
        if np.any(metrics["nonfinite"]):
            bad = [name for name, value in metrics.items() if not np.all(np.isfinite(value))]
            what = ", ".join(bad) if bad else "train state (parameters or optimizer state)"
            if members:
                what += " of " + ", ".join(m for m, flag in zip(members, metrics["nonfinite"]) if flag)
            raise NonFiniteError(f"non-finite {what} at step {done}; {last_good()}")

    def last_good() -> str:
        checkpointer.wait()
        last = checkpointer.latest_step()
        return f"last good checkpoint: step {last} ({checkpointer.path(last)})" if last else "no checkpoint saved"

    bar = tqdm.tqdm(total=num_steps, initial=start, disable=not progress or jax.process_index() != 0,
                    unit="step", dynamic_ncols=True)
    summed, pending = None, None  # pending: (step, metrics) of the last step, not yet checked
    try:
        with _PreemptionNotice() as preemption:
            for step in range(start, stop):
                state, metrics = step_fn(state, batches.batch(step), jax.random.fold_in(rng, step))
                done = step + 1
                if pending is not None:
                    check(*pending)  # step t-1, while step t runs: the host stays one step ahead, not more
                pending = (done, metrics)
                summed = metrics if summed is None else jax.tree.map(jnp.add, summed, metrics)
                bar.update(1)
                preempted = preemption.requested(done)
                save = done % checkpoint_every == 0 or done in checkpoint_steps or done == stop or preempted
                if done % log_every == 0 or save:  # log windows end at checkpoints, so a resumed log matches
                    check(*pending)
                    pending = None
                    skipped += _log(writer, bar, done, jax.device_get(summed), state, skip_nonfinite, skipped,
                                    members)
                    summed = None
                if not save:
                    continue
                eval_scalars = None
                if evaluate is not None and not preempted:  # on SIGTERM: save now, evaluate after resuming
                    eval_scalars = evaluate(state)
                    writer.write(done, eval_scalars)
                    bar.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_scalars.items()))
                checkpointer.save(done, state, {"step": done, "epoch": done / batches.steps_per_epoch,
                                                "skipped_steps": skipped, **record}, metrics=eval_scalars)
                if preempted:
                    checkpointer.wait()
                    raise Preempted(f"SIGTERM: saved step {done} to {checkpointer.path(done)}; "
                                    f"rerun the same command to resume")
    finally:
        bar.close()
        checkpointer.close()  # waits for the save in flight
        writer.close()
    return state


def _log(writer, bar, done: int, summed: dict, state, skip_nonfinite: bool, skipped_before: int,
         members: Sequence[str] = ()) -> int:
    """Writes the window's train means and the learning rate; returns the steps skipped in the window."""
    if members:
        return _log_members(writer, bar, done, summed, state, skip_nonfinite, skipped_before, members)
    skipped = int(summed.pop("nonfinite"))  # always 0 unless skip_nonfinite: a non-finite step stops training
    scalars = {}
    if float(summed["count"]) > 0:  # 0 only if every step of the window was skipped
        scalars = {f"train_{k}": v for k, v in means(summed).items()}
    scalars["learning_rate"] = float(np.asarray(optimizers.current_learning_rate(state.opt_state)))
    if skip_nonfinite:
        scalars["skipped_steps"] = skipped_before + skipped
    writer.write(done, scalars)
    bar.set_postfix(loss=f"{scalars.get('train_loss', float('nan')):.4f}", lr=f"{scalars['learning_rate']:.2e}")
    return skipped


def _log_members(writer, bar, done: int, summed: dict, state, skip_nonfinite: bool, skipped_before: int,
                 members: Sequence[str]) -> int:
    """`_log` for K members: each member's means as `train_loss/MEMBER`, their mean as `train_loss`; the
    learning rate likewise. Skipped steps count member-steps."""
    skipped = int(np.sum(summed.pop("nonfinite")))
    rates = np.broadcast_to(np.asarray(optimizers.current_learning_rate(state.opt_state)), (len(members),))
    per_member = []
    for k in range(len(members)):
        sums = {name: value[k] for name, value in summed.items()}
        scalars = {f"train_{name}": v for name, v in means(sums).items()} if float(sums["count"]) > 0 else {}
        per_member.append({**scalars, "learning_rate": float(rates[k])})
    scalars = {}
    for name in dict.fromkeys(name for m in per_member for name in m):
        values = [m[name] for m in per_member if name in m]
        scalars[name] = float(np.mean(values))
        scalars.update({f"{name}/{member}": m[name] for member, m in zip(members, per_member) if name in m})
    if skip_nonfinite:
        scalars["skipped_steps"] = skipped_before + skipped
    writer.write(done, scalars)
    bar.set_postfix(loss=f"{scalars.get('train_loss', float('nan')):.4f}", lr=f"{scalars['learning_rate']:.2e}")
    return skipped


def _state_shardings(state, mesh: Mesh, members: bool):
    """The single-run shardings, or for stacked members every leaf split over the devices along the member
    axis (so each device trains whole members: K must be a multiple of the mesh size)."""
    if not members:
        return sharding.state_shardings(state, mesh)
    num_members = jax.tree.leaves(state)[0].shape[0]
    if num_members % mesh.size:
        raise InputError(f"{num_members} members do not divide over the {mesh.size} devices of the mesh: "
                         f"use a multiple of {mesh.size} seeds or config.num_devices={math.gcd(num_members, mesh.size)}")
    return jax.tree.map(lambda _: sharding.batch_sharded(mesh), state)


def guard_nonfinite(train_step: Callable, skip: bool = False) -> Callable:
    """Wraps `train_step` to flag, in `metrics["nonfinite"]` (0 or 1), a step whose metrics or new state hold a
    NaN or inf (a reduction over the state that XLA fuses into the update).

    With `skip`, such a step also keeps the old state (BatchNorm statistics included, which
    optax.apply_if_finite would not guard) and adds nothing to the other metrics (count 0); the data still
    moves on to the next batch."""

    def step(state, batch, rng):
        new_state, metrics = train_step(state, batch, rng)
        finite = _all_finite(metrics) & _all_finite(new_state)
        if skip:  # a cond, not a select per leaf: the same result, compiled 3x faster on XLA:CPU
            new_state = jax.lax.cond(finite, lambda: new_state, lambda: state)
            metrics = jax.tree.map(lambda m: jnp.where(finite, m, jnp.zeros_like(m)), metrics)
        return new_state, {**metrics, "nonfinite": (~finite).astype(jnp.int32)}

    return step


def _all_finite(tree) -> jax.Array:
    checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


class _PreemptionNotice:
    """SIGTERM, polled once per step. One process: a handler that only sets a flag (the loop finishes the step
    and saves). Several processes: jax's preemption service (started by `jax.distributed.initialize`) catches
    SIGTERM on any host and `reached_preemption_sync_point` makes all hosts save at the same step (checked by
    hand: 2 processes on one machine, SIGTERM to process 1 only; both saved step 15 and exited 0 in 4 s)."""

    def __enter__(self):
        self.received, self._installed, self._previous = False, False, None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.received = True

    def requested(self, step: int) -> bool:
        if jax.process_count() > 1:
            try:
                return multihost_utils.reached_preemption_sync_point(step)
            except RuntimeError:  # jax_enable_preemption_service is off: no notice can reach us
                return False
        return self.received

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)


def _drop_logged_after(workdir: str, step: int) -> None:
    """Removes from metrics.jsonl what an interrupted run logged after the checkpoint it resumes from (and a
    half-written last line): those steps are run and logged again."""
    path = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() != 0 or not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):
            pass
    if len(kept) != len(lines):
        with open(path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)
