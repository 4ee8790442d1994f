"""scripts/lr_find.py on a slice of the real data: suggestions printed, lr_find.json and lr_find.png written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT


@pytest.mark.parametrize("seeds", [1, 2])
def test_lr_find_cli_writes_curve_and_suggestions(tmp_path, tfds_dir, seeds):
    run = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "scripts", "lr_find.py"),
         "--config", os.path.join(REPO_ROOT, "experiments", "fashion_mnist.py"), "--workdir", str(tmp_path),
         f"--seeds={seeds}", f"--config.data_dir={tfds_dir}", "--config.train_examples=2048",
         "--config.batch_size=64", "--config.lr_find.num_steps=30", "--config.lr_find.start_lr=1e-5"],
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
