"""Statistics on fixed numbers (worked out by hand), and scripts/compare.py on two real experiments with 3
seeds each, one vmapped program per side, on real Fashion-MNIST images."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from research.core import stats


def test_summary_mean_std_and_t_confidence_interval_by_hand():
    s = stats.summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)  # deviations -1, 0, 1: variance 2 / (3 - 1) = 1
    # t quantile for 2 degrees of freedom in closed form: (2p - 1) / sqrt(2 p (1 - p)), p = 0.975
    t_975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert t_975_2 == pytest.approx(4.302653, abs=1e-6)
    half_width = t_975_2 * 1.0 / math.sqrt(3)  # 2.484138
    assert s.ci_low == pytest.approx(2.0 - half_width, abs=1e-9)
    assert s.ci_high == pytest.approx(2.0 + half_width, abs=1e-9)
    assert s.ci_high == pytest.approx(4.484138, abs=1e-6)
    one = stats.summarize([0.5])
    assert one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)


def test_welch_t_test_by_hand():
    # a = (1, 3), b = (4, 6): variances 2 and 2, standard error sqrt(2/2 + 2/2) = sqrt(2), t = 3 / sqrt(2);
    # df = (1 + 1)^2 / (1^2 / 1 + 1^2 / 1) = 2, and for 2 degrees of freedom the t CDF is
    # 1/2 + t / (2 sqrt(2 + t^2)), so p = 2 (1/2 - t / (2 sqrt(2 + t^2))) = 1 - t / sqrt(2 + t^2).
    test = stats.welch_t_test([1.0, 3.0], [4.0, 6.0])
    t = 3 / math.sqrt(2)
    assert test.t == pytest.approx(t, abs=1e-12)
    assert test.df == pytest.approx(2.0, abs=1e-12)
    assert test.p == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    assert test.p == pytest.approx(0.167950, abs=1e-6)
    # unequal variances and sizes: a = (1, 2, 3) var 1, b = (2, 4, 6, 8) var 20/3;
    # se^2 = 1/3 + 5/3 = 2, t = (5 - 2) / sqrt(2); df = 2^2 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 4 / (1/18 + 25/27)
    test = stats.welch_t_test([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0])
    assert test.t == pytest.approx(3 / math.sqrt(2), abs=1e-12)
    assert test.df == pytest.approx(4 / (1 / 18 + 25 / 27), abs=1e-12)  # 4.0755
    assert 0.05 < test.p < 0.167950  # more degrees of freedom than above, same t: a smaller p
    assert math.isnan(stats.welch_t_test([1.0], [2.0, 3.0]).p)
    assert math.isnan(stats.welch_t_test([1.0, 1.0], [2.0, 2.0]).p)


def test_compare_two_real_experiments_three_seeds_each(tfds_dir, tmp_path):
    small = ["--{side}.data_dir=" + tfds_dir, "--{side}.data.train_examples=800", "--{side}.data.test_examples=200",
             "--{side}.num_epochs=2", "--{side}.learning_rate=0.01", "--{side}.batch_size=64", "--{side}.model.stem_width=8",
             "--{side}.model.stage_sizes=(1,1)", "--{side}.model.stage_widths=(8,16)",
             "--{side}.model.stage_strides=(2,2)", "--{side}.tta=False"]
    command = [sys.executable, "scripts/compare.py", "--baseline", "experiments/fashion_mnist_sgdr.py",
               "--variant", "experiments/fashion_mnist_wide_head.py", "--seeds", "3", "--workdir", str(tmp_path),
               *[arg.format(side="baseline") for arg in small], *[arg.format(side="variant") for arg in small]]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| test_accuracy |" in result.stdout
    for name in ("compare.md", "compare.csv", "compare.png"):
        assert os.path.getsize(tmp_path / name) > 100, name
    with open(tmp_path / "compare.csv") as f:
        rows = {row["metric"]: row for row in csv.DictReader(f)}
    assert {"valid_accuracy", "valid_loss", "test_accuracy", "test_loss"} <= set(rows)
    for side in ("baseline", "variant"):
        with open(tmp_path / side / "results.json") as f:
            results = json.load(f)
        assert set(results) >= {"metrics", "config", "timings", "devices", "versions", "per_seed"}
        per_seed = [s["metrics"]["test_accuracy"] for s in results["per_seed"]]
        assert [s["seed"] for s in results["per_seed"]] == [0, 1, 2]
        assert len(set(per_seed)) > 1  # three different runs
        assert min(per_seed) > 0.25  # 22 steps on 720 real images: above chance (0.1)
        assert float(rows["test_accuracy"][f"{side}_mean"]) == pytest.approx(np.mean(per_seed), abs=1e-9)
        assert float(rows["test_accuracy"][f"{side}_std"]) == pytest.approx(np.std(per_seed, ddof=1), abs=1e-9)
    baseline, variant = ([s["metrics"]["test_accuracy"] for s in json.load(open(tmp_path / side / "results.json"))
                          ["per_seed"]] for side in ("baseline", "variant"))
    assert float(rows["test_accuracy"]["p"]) == pytest.approx(stats.welch_t_test(baseline, variant).p, abs=1e-9)
    # a rerun reads both finished sides back: nothing is trained again, the same table comes out
    rerun = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and rerun.stdout.startswith("baseline: ")
    assert result.stdout.endswith(rerun.stdout)  # the first run also printed its training progress
