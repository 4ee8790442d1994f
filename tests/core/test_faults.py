"""Fault tolerance on real Fashion-MNIST, mostly end to end through scripts/train.py in subprocesses:
SIGKILL then the same command again equals an uninterrupted run bit for bit (parameters, results.json,
metrics.jsonl); SIGTERM saves the current step and exits 0 within 30 s; half-written and damaged checkpoints
are passed over with a warning; the last N checkpoints plus the best are kept; a non-finite loss or gradient
stops training keeping the last good checkpoint (or, optionally, such steps are skipped and counted).

The subprocesses share a JAX compilation cache, so only the first one compiles; a cached executable is the
same program, so results stay bitwise equal (XLA:CPU is deterministic run to run).
"""

import glob
import hashlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO_ROOT
from experiments import fashion_mnist as experiment
from research.core import sharding, trainer
from research.core.checkpoint import Checkpointer

# 569 images, 57 held out for validation: 512 / batch 64 = 8 steps per epoch, 3 epochs; checkpoints at 8, 16,
# 24; a log line every step.
TINY = ["--config.data.train_examples=569", "--config.data.test_examples=500", "--config.learning_rate=0.01",
        "--config.batch_size=64", "--config.eval_batch_size=500", "--config.model.stage_widths=(8,16,32)",
        "--config.model.stem_width=8", "--config.tta=False", "--config.num_epochs=3", "--config.log_every=1"]
NUM_STEPS, FIRST_CHECKPOINT = 24, 8
TIMEOUT = 300


def train_command(workdir, tfds_dir, *overrides) -> list[str]:
    """The TINY command; an override replaces TINY's flag of the same key (a repeated tuple flag would append)."""
    flags = {arg.split("=")[0]: arg for arg in [f"--config.data_dir={tfds_dir}", *TINY, *overrides]}
    return [sys.executable, os.path.join(REPO_ROOT, "scripts", "train.py"), "--config",
            os.path.join(REPO_ROOT, "experiments", "fashion_mnist.py"), "--workdir", str(workdir), *flags.values()]


def cli_env(cache_dir, **extra) -> dict:
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **extra)


def run_train(workdir, tfds_dir, cache_dir, *overrides, **env) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(workdir, tfds_dir, *overrides), capture_output=True, text=True,
                          timeout=TIMEOUT, env=cli_env(cache_dir, **env))


def shared_run(tmp_path_factory, tfds_dir):
    """(compilation cache dir, workdir of one uninterrupted TINY run), made once per session and shared with
    tests/test_bad_input.py."""
    base = tmp_path_factory.getbasetemp()
    cache_dir, workdir = base / "faults_jax_cache", base / "faults_reference"
    if not (workdir / "results.json").exists():
        run = run_train(workdir, tfds_dir, cache_dir)
        assert run.returncode == 0, run.stderr[-3000:]
    return cache_dir, workdir


def file_hashes(directory) -> dict[str, str]:
    hashes = {}
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                hashes[os.path.relpath(os.path.join(root, name), directory)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def final_arrays(workdir, step=NUM_STEPS) -> list[np.ndarray]:
    restored = Checkpointer(str(workdir / "checkpoints")).manager.restore(step)
    return [np.asarray(leaf) for leaf in jax.tree.leaves(restored["state"])]


def logged(workdir) -> list[dict]:
    """metrics.jsonl without wall-clock times."""
    with open(workdir / "metrics.jsonl") as f:
        return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in f]


def results(workdir) -> dict:
    with open(workdir / "results.json") as f:
        return {k: v for k, v in json.load(f).items() if k != "timings"}


def like_state(checkpointer: Checkpointer, step: int):
    """An abstract state with the checkpoint's own structure and shapes (stands in for the model's)."""
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                        checkpointer.manager.item_metadata(step)["state"])


def largest_array_file(step_dir) -> str:
    return max(glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True), key=os.path.getsize)


def start_and_wait_for_step(workdir, tfds_dir, cache_dir, step: int, out) -> subprocess.Popen:
    """Starts the TINY command and returns once metrics.jsonl shows training reached `step` and the first
    checkpoint is complete (orbax renames its directory to the step number when done)."""
    proc = subprocess.Popen(train_command(workdir, tfds_dir), stdout=out, stderr=out, env=cli_env(cache_dir))
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(workdir / "checkpoints" / str(FIRST_CHECKPOINT)) and any(
                line.get("step", 0) >= step and "train_loss" in line for line in logged(workdir)):
            return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"training ended (rc {proc.returncode}) or timed out before step {step}")


def signal_at_random_step(tmp_path, name: str, tfds_dir, cache_dir, sig):
    """Runs the TINY command in tmp_path/name (output in tmp_path/name.log), sends `sig` at a random step after
    the first checkpoint and waits for the exit; returns (workdir, the step aimed at, the return code, seconds
    from the signal to the exit)."""
    seed = int(os.environ.get("FAULT_SEED", time.time_ns() % 2 ** 32))  # FAULT_SEED=<printed> reproduces a run
    aim = random.Random(seed).randrange(FIRST_CHECKPOINT + 1, NUM_STEPS - 4)
    print(f"{name}: signal at step {aim} (FAULT_SEED={seed})")
    workdir = tmp_path / name
    with open(tmp_path / f"{name}.log", "w") as out:
        proc = start_and_wait_for_step(workdir, tfds_dir, cache_dir, aim, out)
        sent = time.time()
        proc.send_signal(sig)
        returncode = proc.wait(timeout=60)
    return workdir, aim, returncode, time.time() - sent


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tfds_dir):
    return shared_run(tmp_path_factory, tfds_dir)


def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path, tfds_dir, reference):
    cache_dir, straight = reference
    workdir, kill_at, returncode, _ = signal_at_random_step(tmp_path, "killed", tfds_dir, cache_dir, signal.SIGKILL)
    assert returncode == -signal.SIGKILL
    killed_at = max(line["step"] for line in logged(workdir))
    resumed_from = Checkpointer(str(workdir / "checkpoints")).latest_step()
    context = f"killed at step {killed_at} (aimed at {kill_at}), resumed from {resumed_from}"
    assert resumed_from is not None and FIRST_CHECKPOINT <= resumed_from <= killed_at < NUM_STEPS, context

    rerun = subprocess.run(train_command(workdir, tfds_dir), capture_output=True, text=True, timeout=TIMEOUT,
                           env=cli_env(cache_dir))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert results(workdir) == results(straight), context
    assert logged(workdir) == logged(straight), context  # every step's train metrics and every evaluation
    for a, b in zip(final_arrays(workdir), final_arrays(straight), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=context)


def test_sigterm_saves_the_current_step_and_exits_0_within_30_seconds(tmp_path, tfds_dir, reference):
    cache_dir, _ = reference
    workdir, signal_at, returncode, seconds = signal_at_random_step(tmp_path, "preempted", tfds_dir, cache_dir,
                                                                    signal.SIGTERM)
    with open(tmp_path / "preempted.log") as f:
        output = f.read()
    assert returncode == 0, output[-3000:]
    assert seconds < 30
    saved = re.search(r"^preempted: SIGTERM: saved step (\d+) to (\S+); rerun the same command", output, re.M)
    assert saved, output[-3000:]
    step = int(saved.group(1))
    checkpointer = Checkpointer(str(workdir / "checkpoints"))
    last_logged = max(line["step"] for line in logged(workdir))
    assert signal_at <= step == last_logged == checkpointer.latest_step() < NUM_STEPS  # the current step
    assert saved.group(2) == checkpointer.path(step)
    _, meta = checkpointer.restore(step, like_state(checkpointer, step))  # reads back, fingerprints match
    assert meta["step"] == step and meta["seed"] == 0 and meta["config"]["batch_size"] == 64


def test_half_written_checkpoint_is_ignored_and_damaged_ones_are_passed_over(tmp_path, reference, caplog):
    _, straight = reference
    state = Checkpointer(str(straight / "checkpoints")).manager.restore(NUM_STEPS)["state"]
    directory = tmp_path / "checkpoints"
    checkpointer = Checkpointer(str(directory), keep=5)
    for step in (1, 2, 3):
        checkpointer.save(step, jax.tree.map(lambda x, step=step: x * step, state), {"step": step})
    checkpointer.close()
    # A save cut short by a kill: orbax's temporary directory of a later step, with part of its files.
    partial = directory / "4.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(directory / "3", partial)
    os.remove(largest_array_file(partial))
    # Step 3: bytes garbled in the middle of an array file (it still reads: only the fingerprints notice).
    path = largest_array_file(directory / "3")
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        middle = slice(len(data) // 2, len(data) // 2 + 64)
        data[middle] = bytes(b ^ 0xFF for b in data[middle])
        f.seek(0)
        f.write(data)
    # Step 2: the second half of an array file lost.
    path = largest_array_file(directory / "2")
    os.truncate(path, os.path.getsize(path) // 2)

    checkpointer = Checkpointer(str(directory), keep=5)
    assert checkpointer.all_steps() == [1, 2, 3]
    with caplog.at_level(logging.WARNING):
        restored, meta = checkpointer.restore_latest(like_state(checkpointer, 1))
    assert meta["step"] == 1
    [warning] = [r.getMessage() for r in caplog.records if "damaged checkpoint" in r.getMessage()]
    assert "\n" not in warning
    assert f"step 3 ({directory}/3: ValueError: " in warning and "differ from their fingerprints" in warning
    assert f"step 2 ({directory}/2: " in warning
    assert warning.endswith(f"resuming from step 1 ({directory}/1)")
    assert sorted(os.listdir(directory / "damaged")) == ["2", "3"] and checkpointer.all_steps() == [1]
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_keeps_the_last_n_plus_the_best(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), keep=2, best_metric="test_accuracy", best_mode="max")
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    accuracies = {1: 0.5, 2: 0.9, 3: 0.7, 4: 0.8, 5: None, 6: 0.6}  # step 5: saved on SIGTERM, not evaluated
    for step, accuracy in accuracies.items():
        checkpointer.save(step, state, {"step": step}, None if accuracy is None else {"test_accuracy": accuracy})
    checkpointer.wait()
    assert checkpointer.all_steps() == [2, 5, 6] and checkpointer.best_step() == 2
    checkpointer.close()
    assert sorted(os.listdir(tmp_path)) == ["2", "5", "6"]


def test_huge_learning_rate_stops_at_first_nonfinite_step_keeping_last_good_checkpoint(tmp_path, tfds_dir,
                                                                                       reference):
    cache_dir, _ = reference
    run = run_train(tmp_path, tfds_dir, cache_dir, "--config.learning_rate=1000")
    assert run.returncode == 1
    last_line = run.stderr.strip().splitlines()[-1]
    stopped = re.fullmatch(r"error: non-finite (.+) at step (\d+); last good checkpoint: step (\d+) \((\S+)\)",
                           last_line)
    assert stopped, run.stderr[-2000:]
    step, good = int(stopped.group(2)), int(stopped.group(3))
    assert FIRST_CHECKPOINT <= good < step < NUM_STEPS
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    assert checkpointer.latest_step() == good  # nothing saved after the last good step
    state, _ = checkpointer.restore(good, like_state(checkpointer, good))
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))
    assert max(line["step"] for line in logged(tmp_path)) < step  # the non-finite step was not logged
    assert not (tmp_path / "results.json").exists()


def train_with_nan_batches(workdir: str, tfds_dir: str) -> dict[str, str]:
    """The trainer with the experiment's TINY model, data, optimizer and train step, and NaN images injected:
    at steps 3 and 11 (counting from 1) with skip_nonfinite into workdir/skip, at step 11 without into
    workdir/stop. Returns each run's NonFiniteError message, or "" if it finished.

    Runs in a subprocess (`run_with_nan_batches`) so that the shared compilation cache serves the model's
    initialisation and the stopping run's train step (the very one the CLI runs)."""
    config = experiment.get_config()
    config.update_from_flattened_dict({"data_dir": tfds_dir, "data.train_examples": 569, "batch_size": 64,
                                       "model.stage_widths": (8, 16, 32), "model.stem_width": 8})
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    run = experiment.setup(config, mesh)
    clean = run.batches

    class WithNaNs:
        steps_per_epoch = clean.steps_per_epoch

        def __init__(self, *nan_steps):
            self.nan_steps = nan_steps

        def batch(self, step):
            batch = clean.batch(step)
            return {**batch, "image": batch["image"] * jnp.nan} if step + 1 in self.nan_steps else batch

    messages = {}
    for name, nan_steps, skip in (("skip", (3, 11), True), ("stop", (11,), False)):
        state = run.create_state(run.make_tx(0.01, NUM_STEPS), jax.random.key(config.seed))
        try:
            trainer.train(state=state, train_step=run.train_step,
                          batches=WithNaNs(*nan_steps), num_steps=16, mesh=mesh, seed=config.seed,
                          workdir=os.path.join(workdir, name), checkpoint_every=clean.steps_per_epoch, log_every=1,
                          progress=False, skip_nonfinite=skip)
            messages[name] = ""
        except trainer.NonFiniteError as e:
            messages[name] = str(e)
    return messages


def test_nan_batches_are_skipped_and_counted_or_stop_training(tmp_path, tfds_dir, reference):
    """Real batches with NaN images injected: skipped and counted with skip_nonfinite, else training stops."""
    cache_dir, _ = reference
    code = (f"import json, sys; sys.path[:0] = [{REPO_ROOT!r}, {os.path.dirname(__file__)!r}, {os.path.dirname(os.path.dirname(__file__))!r}]; import test_faults; "
            f"print('result:', json.dumps(test_faults.train_with_nan_batches({str(tmp_path)!r}, {str(tfds_dir)!r})))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT,
                         env=cli_env(cache_dir))
    assert run.returncode == 0, run.stderr[-3000:]
    messages = json.loads(run.stdout.split("result: ", 1)[1])

    assert messages["skip"] == ""
    lines = logged(tmp_path / "skip")
    assert [line["step"] for line in lines if "train_loss" not in line] == [3, 11]
    assert [line["skipped_steps"] for line in lines if line["step"] in (2, 3, 10, 11, 16)] == [0, 1, 1, 2, 2]
    checkpointer = Checkpointer(str(tmp_path / "skip" / "checkpoints"))
    state, meta = checkpointer.restore(16, like_state(checkpointer, 16))
    assert meta["skipped_steps"] == 2 and int(state["step"]) == 14  # two of the 16 updates skipped
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]  # it still learns

    checkpoints = tmp_path / "stop" / "checkpoints"
    # Inside jit, XLA:CPU's vectorised max (ReLU) turns NaN activations into 0, so the loss of an all-NaN batch
    # can stay finite (2.3 = ln 10, uniform logits) while its gradient does not: the gradient check matters.
    assert re.fullmatch(rf"non-finite (loss, )?grad_norm at step 11; last good checkpoint: step 8 "
                        rf"\({checkpoints}/8\)", messages["stop"]), messages["stop"]
    assert Checkpointer(str(checkpoints)).all_steps() == [8]
    assert max(line["step"] for line in logged(tmp_path / "stop")) == 10
