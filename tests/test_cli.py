"""scripts/train.py's locked configs and presets, and resume, on a small slice of the real data (the outputs of a
whole run: tests/test_experiments.py)."""

import os
import subprocess
import sys

import jax
import numpy as np

from conftest import REPO_ROOT
from experiments import fashion_mnist as experiment
from research.core.checkpoint import Checkpointer

SMALL = ["--config.data.train_examples=1024", "--config.data.test_examples=500", "--config.batch_size=128",
         "--config.eval_batch_size=250", "--config.num_epochs=2", "--config.lr_find.num_steps=12"]


def _train(workdir, tfds_dir, *overrides):
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "scripts", "train.py"),
         "--config", os.path.join(REPO_ROOT, "experiments", "fashion_mnist.py"), "--workdir", str(workdir),
         f"--config.data_dir={tfds_dir}", *overrides], capture_output=True, text=True, timeout=600)


def test_config_typo_fails_with_a_clear_message(tmp_path, tfds_dir):
    run = _train(tmp_path, tfds_dir, "--config.batch_sise=64")
    assert run.returncode != 0
    last_line = run.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: bad command-line flag") and "batch_sise" in last_line
    assert "batch_size" in last_line  # the suggestion
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "results.json").exists()


def test_unknown_preset_fails_with_a_clear_message(tmp_path):
    run = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "train.py"), "--config",
                          os.path.join(REPO_ROOT, "experiments", "fashion_mnist.py") + ":gpu", "--workdir",
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "unknown preset 'gpu'" in run.stderr.strip().splitlines()[-1]


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, tfds_dir):
    config = experiment.get_config()
    config.update_from_flattened_dict({
        "data_dir": tfds_dir, "data.train_examples": 1024, "data.test_examples": 500, "batch_size": 128,
        "eval_batch_size": 250, "num_epochs": 2, "learning_rate": 3e-3,
        "model.stem_width": 8, "model.stage_sizes": (1, 1, 1), "model.stage_widths": (8, 16, 32)})  # narrowed
    straight = experiment.train_and_evaluate(config, str(tmp_path / "straight"))
    assert experiment.train_and_evaluate(config, str(tmp_path / "resumed"), stop_at=10) == {}
    assert Checkpointer(str(tmp_path / "resumed" / "checkpoints")).latest_step() == 10  # mid-epoch 2
    resumed = experiment.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert resumed["metrics"] == straight["metrics"]
    a = Checkpointer(str(tmp_path / "straight" / "checkpoints")).manager.restore(14)["state"]
    b = Checkpointer(str(tmp_path / "resumed" / "checkpoints")).manager.restore(14)["state"]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
