"""Fault tolerance on real Fashion-MNIST, mostly end to end through scripts/train.py in subprocesses:
SIGKILL then the same command again equals an uninterrupted run bit for bit; SIGTERM saves the current step
and exits 0; half-written and damaged checkpoints are passed over with a warning; a non-finite loss stops
training (or, optionally, such steps are skipped and counted).

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
from research import classification, sharding, trainer
from research.checkpoint import Checkpointer
from research.data import fashion_mnist
from research.train_state import create_train_state

# 512 images / batch 64 = 8 steps per epoch, 3 epochs; checkpoints at 8, 16, 24; a log line every step.
TINY = ["--config.train_examples=512", "--config.test_examples=500", "--config.learning_rate=0.01",
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
        return {k: v for k, v in json.load(f).items() if not k.endswith("_seconds")}


def like_state(checkpointer: Checkpointer, step: int):
    """An abstract state with the checkpoint's own structure and shapes (stands in for the model's)."""
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
                        checkpointer.manager.item_metadata(step)["state"])


def largest_array_file(step_dir) -> str:
    return max(glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True), key=os.path.getsize)


def start_and_wait_for_step(workdir, tfds_dir, cache_dir, step: int, out) -> subprocess.Popen:
    """Starts the TINY command and returns once metrics.jsonl shows training reached `step`."""
    proc = subprocess.Popen(train_command(workdir, tfds_dir), stdout=out, stderr=out, env=cli_env(cache_dir))
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(workdir / "metrics.jsonl") and any(
                line.get("step", 0) >= step and "train_loss" in line for line in logged(workdir)):
            return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"training ended (rc {proc.returncode}) or timed out before step {step}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tfds_dir):
    return shared_run(tmp_path_factory, tfds_dir)


def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path, tfds_dir, reference):
    cache_dir, straight = reference
    kill_at = random.Random().randrange(FIRST_CHECKPOINT + 1, NUM_STEPS - 4)
    workdir = tmp_path / "killed"
    with open(tmp_path / "killed.log", "w") as out:
        proc = start_and_wait_for_step(workdir, tfds_dir, cache_dir, kill_at, out)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
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


def test_sigterm_saves_current_step_and_exits_0_then_damaged_checkpoint_falls_back(tmp_path, tfds_dir,
                                                                                    reference):
    cache_dir, straight = reference
    signal_at = random.Random().randrange(FIRST_CHECKPOINT + 1, 15)
    workdir = tmp_path / "preempted"
    with open(tmp_path / "preempted.log", "w") as out:
        proc = start_and_wait_for_step(workdir, tfds_dir, cache_dir, signal_at, out)
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=60)
        seconds = time.time() - sent
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
    _, meta = checkpointer.restore(step, like_state(checkpointer, step))  # reads back, fingerprints match
    assert meta["step"] == step and meta["seed"] == 0
    previous = max(s for s in checkpointer.all_steps() if s < step)

    # Garble the middle of the newest checkpoint's largest array file: the same command warns, moves it aside,
    # resumes from the previous one and still ends exactly where the uninterrupted run did.
    path = largest_array_file(checkpointer.path(step))
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 2:len(data) // 2 + 64] = bytes(b ^ 0xFF for b in data[len(data) // 2:len(data) // 2 + 64])
        f.seek(0)
        f.write(data)
    rerun = subprocess.run(train_command(workdir, tfds_dir), capture_output=True, text=True, timeout=TIMEOUT,
                           env=cli_env(cache_dir))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    warnings = [line for line in rerun.stderr.splitlines() if "damaged checkpoint" in line]
    assert len(warnings) == 1, rerun.stderr[-3000:]
    assert f"step {step} ({checkpointer.path(step)}" in warnings[0]
    assert f"resuming from step {previous} ({checkpointer.path(previous)})" in warnings[0]
    assert os.path.isdir(workdir / "checkpoints" / "damaged" / str(step))
    assert results(workdir) == results(straight)
    for a, b in zip(final_arrays(workdir), final_arrays(straight), strict=True):
        np.testing.assert_array_equal(a, b)


def test_half_written_checkpoint_is_ignored_and_truncated_one_passed_over(tmp_path, reference, caplog):
    _, straight = reference
    directory = tmp_path / "checkpoints"
    shutil.copytree(straight / "checkpoints", directory)
    steps = Checkpointer(str(directory)).all_steps()
    latest, previous = steps[-1], steps[-2]
    # A save cut short by a kill: orbax's temporary directory of a later step, with half its files.
    partial = directory / f"{latest + 8}.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(directory / str(latest), partial)
    os.remove(largest_array_file(partial))
    # The newest finished checkpoint loses the second half of an array file.
    path = largest_array_file(directory / str(latest))
    os.truncate(path, os.path.getsize(path) // 2)

    checkpointer = Checkpointer(str(directory))
    assert checkpointer.latest_step() == latest
    with caplog.at_level(logging.WARNING):
        state, meta = checkpointer.restore_latest(like_state(checkpointer, previous))
    assert meta["step"] == previous
    [warning] = [r.getMessage() for r in caplog.records if "damaged checkpoint" in r.getMessage()]
    assert f"step {latest} ({directory / str(latest)}" in warning and f"resuming from step {previous}" in warning
    assert "\n" not in warning
    assert os.path.isdir(directory / "damaged" / str(latest)) and checkpointer.latest_step() == previous
    expected = Checkpointer(str(straight / "checkpoints")).manager.restore(previous)["state"]
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)


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
    assert good == FIRST_CHECKPOINT < step < NUM_STEPS
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    assert checkpointer.all_steps() == [good]  # nothing saved after the last good step
    state, _ = checkpointer.restore(good, like_state(checkpointer, good))
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))
    assert max(line["step"] for line in logged(tmp_path)) < step  # the non-finite step was not logged
    assert not (tmp_path / "results.json").exists()


def test_nan_batches_are_skipped_and_counted_or_stop_training(tmp_path, tfds_dir):
    """The trainer directly, with NaN images injected into real batches (at steps 3 and 6, or at 6)."""
    config = experiment.get_config()
    config.update_from_flattened_dict({"batch_size": 32, "model.stage_widths": (8, 16, 32), "model.stem_width": 8})
    mesh = sharding.make_mesh(1)
    images, labels = fashion_mnist.load("train", tfds_dir, limit=128)
    clean = experiment.make_batches(config, images, labels, mesh)

    class WithNaNs:
        steps_per_epoch = clean.steps_per_epoch

        def __init__(self, *nan_steps):
            self.nan_steps = nan_steps

        def batch(self, step):
            batch = clean.batch(step)
            return {**batch, "image": batch["image"] * jnp.nan} if step + 1 in self.nan_steps else batch

    model, tx = experiment.make_model(config), experiment.make_tx(config, 3e-3, 0)
    init = jax.jit(lambda key: create_train_state(model, tx, key, (1, *images.shape[1:])))
    common = dict(train_step=classification.make_train_step(), num_steps=8, mesh=mesh, seed=0, checkpoint_every=4,
                  log_every=1, progress=False)

    state = trainer.train(state=init(jax.random.key(0)), batches=WithNaNs(3, 6), workdir=str(tmp_path / "skip"),
                          skip_nonfinite=True, **common)
    lines = logged(tmp_path / "skip")
    assert [line["step"] for line in lines if "train_loss" not in line] == [3, 6]
    assert lines[-1]["skipped_steps"] == 2
    assert int(state.step) == 6  # two of the eight updates skipped
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))
    assert Checkpointer(str(tmp_path / "skip" / "checkpoints")).manager.restore(8)["meta"]["skipped_steps"] == 2

    with pytest.raises(trainer.NonFiniteError) as stopped:
        trainer.train(state=init(jax.random.key(0)), batches=WithNaNs(6), workdir=str(tmp_path / "stop"), **common)
    checkpoints = tmp_path / "stop" / "checkpoints"
    # Inside jit, XLA:CPU's vectorised max (ReLU) turns NaN activations into 0, so the loss of an all-NaN batch
    # can stay finite (2.3 = ln 10, uniform logits) while its gradient does not: the gradient check matters.
    assert re.fullmatch(rf"non-finite (loss, )?grad_norm at step 6; last good checkpoint: step 4 \({checkpoints}/4\)",
                        str(stopped.value))
    assert Checkpointer(str(checkpoints)).all_steps() == [4]
