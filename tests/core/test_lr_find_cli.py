"""scripts/lr_find.py on a slice of the real data: suggestions printed, lr_find.json and lr_find.png written. The
lesson-1 ResNet is narrowed (one block per stage, 8-32 channels): the sweep's code is the same at any width."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

NARROW = {"model.stem_width": 8, "model.stage_sizes": (1, 1, 1), "model.stage_widths": (8, 16, 32)}


@pytest.mark.parametrize("seeds, compiled", [(1, False), (2, True)])
def test_lr_find_cli_writes_curve_and_suggestions(tmp_path, tfds_dir, seeds, compiled):
    run = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "scripts", "lr_find.py"),
         "--config", os.path.join(REPO_ROOT, "experiments", "fashion_mnist.py"), "--workdir", str(tmp_path),
         f"--seeds={seeds}", f"--config.data_dir={tfds_dir}", "--config.data.train_examples=2048",
         "--config.batch_size=32", "--config.lr_find.num_steps=20", "--config.lr_find.start_lr=1e-5",
         f"--config.lr_find.compiled={compiled}", *(f"--config.{k}={v}" for k, v in NARROW.items())],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "suggestions: bottom" in run.stdout
    result = json.load(open(tmp_path / "lr_find.json"))
    assert result["hyperparam"] == "learning_rate"
    assert len(result["values"]) == len(result["losses"]) == result["num_steps"] > 10
    assert np.all(np.diff(result["values"]) > 0)
    assert all(np.isfinite(v) and v > 0 for v in result["suggestions"].values())
    assert (tmp_path / "lr_find.png").stat().st_size > 10_000
    if seeds > 1:
        assert len(result["losses_per_seed"]) == seeds
        np.testing.assert_allclose(np.mean(result["losses_per_seed"], 0), result["losses"], rtol=1e-5)


def test_compiled_and_stepwise_sweeps_agree_on_the_real_model(tmp_path, tfds_dir):
    """The same sweep on the experiment's (narrowed) model and data, as a loop of jitted steps and as one lax.scan.

    Below divergence, and to 1%: the two XLA programs fuse (and so round) differently, and training
    accumulates those last-bit differences (0.3% after 12 steps here); past divergence they explode."""
    from experiments import fashion_mnist as experiment
    from research.core import experiment as recipes, sharding

    config = experiment.get_config()
    config.update_from_flattened_dict({"data_dir": tfds_dir, "data.train_examples": 1024, "batch_size": 64,
                                       "lr_find.num_steps": 12, "lr_find.start_lr": 1e-4,
                                       "lr_find.end_lr": 1e-2, **NARROW})
    run = experiment.setup(config, sharding.make_mesh(1))
    stepwise = recipes.lr_find(config, str(tmp_path / "stepwise"), run)
    config.lr_find.compiled = True
    compiled = recipes.lr_find(config, str(tmp_path / "compiled"), run)
    assert compiled.num_steps == stepwise.num_steps
    np.testing.assert_allclose(compiled.losses[:4], stepwise.losses[:4], rtol=1e-4)
    np.testing.assert_allclose(compiled.losses, stepwise.losses, rtol=1e-2)
