"""Orbax checkpoints of the train state plus a JSON record, kept safe against preemption and damage.

A checkpoint `DIR/<step>/` holds the train state (orbax `StandardSave`) and a JSON record: the step, the
epoch, the seed, the experiment's config and meta, and a fingerprint of every array. Batches and the step RNG
are pure functions of (seed, step), so the step *is* the data position and the RNG state: nothing else is
needed to resume exactly.

- Saving is asynchronous (orbax writes in a background thread while training continues); `close()` waits.
- Orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames it when complete, so a save interrupted
  half-way is never listed as a checkpoint.
- `restore_latest` verifies each checkpoint, newest first: the structure and shapes must match the model (a
  mismatch is the user's error: `InputError` naming the parameter and both shapes), the arrays must read back
  and match their fingerprints (which catch truncated or garbled files). A damaged checkpoint is moved to
  `DIR/damaged/<step>` (kept, not deleted), with a one-line warning naming it and the one used instead.
- Retention: the last `keep` checkpoints plus the best one by an evaluation metric (`best_metric`).
"""

import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from research.core.errors import InputError

DAMAGED_DIR = "damaged"


class Checkpointer:
    def __init__(self, directory: str, keep: int = 2, best_metric: str | None = None, best_mode: str = "max"):
        if best_mode not in ("max", "min"):
            raise InputError(f"checkpoint best_mode must be 'max' or 'min', got {best_mode!r}")
        self.directory = os.path.abspath(directory)
        self.best_metric = best_metric
        policies = [checkpoint_managers.LatestN(n=keep)]
        best_fn = None
        if best_metric:  # a checkpoint saved without evaluation ranks last
            worst = float("-inf") if best_mode == "max" else float("inf")
            best_fn = lambda metrics: metrics.get(best_metric, worst)  # noqa: E731
            policies.append(checkpoint_managers.BestN(get_metric_fn=best_fn, reverse=best_mode == "min", n=1,
                                                      keep_checkpoints_without_metrics=False))
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(
                create=True, best_fn=best_fn, best_mode=best_mode,
                preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies)))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def best_step(self) -> int | None:
        return self.manager.best_step() if self.best_metric else None

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, state, meta: dict, metrics: dict[str, float] | None = None) -> None:
        """Starts an asynchronous save of `state` and `meta` (+ fingerprints) at `step`.

        `metrics` (evaluation scalars) rank the checkpoint for `best_metric`; a checkpoint without them (e.g.
        one saved on preemption) is kept only while it is among the last `keep`."""
        if self.best_metric and metrics is not None and self.best_metric not in metrics:
            raise InputError(f"checkpoint best metric {self.best_metric!r} is not one of the evaluation metrics "
                             f"{sorted(metrics)}")
        meta = {**meta, "fingerprints": _to_json(fingerprints(state))}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)),
                          metrics=(metrics or {}) if self.best_metric else None, force=True)

    def restore(self, step: int, like_state) -> tuple[object, dict]:
        """Restores checkpoint `step` into the structure, shapes and shardings of `like_state`, verified.

        Raises InputError if the checkpoint belongs to a different model, ValueError if it is damaged."""
        self._check_matches(step, like_state)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                     meta=ocp.args.JsonRestore()))
        state, meta = restored["state"], restored["meta"]
        if "fingerprints" in meta:
            expected, actual = meta["fingerprints"], _to_json(fingerprints(state))
            bad = [name for name in actual if actual[name] != expected.get(name)]
            if bad:
                raise ValueError(f"{len(bad)} arrays differ from their fingerprints, e.g. {bad[0]}")
        return state, meta

    def restore_variables(self, step: int) -> dict:
        """{"params", "batch_stats"} of checkpoint `step`, whatever optimizer and schedule saved them (for
        prediction and re-scoring), checked against their fingerprints; ValueError if damaged."""
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                                     meta=ocp.args.JsonRestore()))
        state, meta = restored["state"], restored["meta"]
        variables = {name: state.get(name) or {} for name in ("params", "batch_stats")}
        expected, actual = meta.get("fingerprints", {}), _to_json(fingerprints(variables))
        bad = [name for name in actual if actual[name] != expected.get(name)]
        if bad:
            raise ValueError(f"checkpoint {self.path(step)}: {len(bad)} arrays differ from their fingerprints, "
                             f"e.g. {bad[0]}")
        return variables

    def restore_latest(self, like_state) -> tuple[object, dict] | None:
        """The newest checkpoint that verifies, or None. Damaged ones are moved aside with a warning."""
        damaged = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                restored = self.restore(step, like_state)
            except InputError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure to read back means the files are damaged
                damaged.append((step, _first_line(e)))
                continue
            if damaged:
                self._move_damaged(damaged, f"resuming from step {step} ({self.path(step)})")
            return restored
        if damaged:
            self._move_damaged(damaged, "no good checkpoint left; starting from scratch")
        return None

    def wait(self) -> None:
        """Blocks until the asynchronous save in flight (if any) is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def _check_matches(self, step: int, like_state) -> None:
        """InputError naming the first parameter whose presence or shape differs from the checkpoint's."""
        saved = {_path_name(path): tuple(leaf.shape) for path, leaf in
                 jax.tree_util.tree_flatten_with_path(self.manager.item_metadata(step)["state"])[0]}
        wanted = {_path_name(path): tuple(np.shape(leaf)) for path, leaf in
                  jax.tree_util.tree_flatten_with_path(like_state)[0]}
        where = f"checkpoint {self.path(step)} is from a different model"
        for name, shape in wanted.items():
            if name not in saved:
                raise InputError(f"{where}: it has no {name} (shape {shape} in this model)")
            if saved[name] != shape:
                raise InputError(f"{where}: {name} has shape {saved[name]} in the checkpoint but {shape} in "
                                 f"this model")
        extra = sorted(set(saved) - set(wanted))
        if extra:
            raise InputError(f"{where}: it has {extra[0]} (shape {saved[extra[0]]}), which this model lacks")

    def _move_damaged(self, damaged: list[tuple[int, str]], outcome: str) -> None:
        moved = []
        for step, reason in damaged:
            target = os.path.join(self.directory, DAMAGED_DIR, str(step))
            suffix = 1
            while os.path.exists(target):
                suffix += 1
                target = os.path.join(self.directory, DAMAGED_DIR, f"{step}-{suffix}")
            if jax.process_index() == 0:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.move(self.path(step), target)
            moved.append(f"step {step} ({self.path(step)}: {reason}; moved to {target})")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("checkpoint: damaged moved")
        self.manager.reload()
        logging.getLogger(__name__).warning("damaged checkpoint %s; %s", "; ".join(moved), outcome)


@jax.jit
def fingerprints(tree) -> dict:
    """Two uint32 checksums of each array's bits (a plain and a position-weighted sum, wrapping): any changed,
    lost or swapped element changes them. Computed on device, so sharded arrays need no gathering."""

    def fingerprint(x):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if x.dtype == jnp.bool_:
            bits = x.astype(jnp.uint32)
        elif x.dtype.itemsize > 4:
            bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
        else:
            bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}")).astype(jnp.uint32)
        index = jnp.zeros(bits.shape, jnp.uint32)  # row-major position of each element
        for axis in range(bits.ndim):
            index = index * jnp.uint32(bits.shape[axis]) + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis)
        return jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * (2 * index + 1), dtype=jnp.uint32)])

    return {_path_name(path): fingerprint(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _to_json(fingerprints_by_name) -> dict[str, list[int]]:
    return {name: [int(v) for v in np.asarray(value)] for name, value in jax.device_get(fingerprints_by_name).items()}


def _path_name(path) -> str:
    """'params/conv1/kernel' for a pytree path, whether its keys are attributes, dict keys or indices."""
    return "/".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))) for key in path)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"
