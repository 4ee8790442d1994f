"""Fashion-MNIST's raw files and the constants taken from them: the normalisation statistics every experiment
uses are those of the 60k training images; the raw files are found through FASHION_MNIST_DIR."""

import os
import shutil
import subprocess
import sys

import numpy as np

from research.vision import fashion_mnist, image_sources

from conftest import REPO_ROOT


def test_normalisation_constants_are_the_60k_training_images_statistics(fashion_mnist_dir, tmp_path):
    images, labels = fashion_mnist.raw_arrays(str(tmp_path))["train"]
    assert images.shape == (60_000, 28, 28) and len(labels) == 60_000
    pixels = images.astype(np.float64) / 255
    print(f"mean {pixels.mean():.6f}, std {pixels.std():.6f}")
    assert abs(pixels.mean() - image_sources.FASHION_MNIST_MEAN) < 5e-5  # 0.286041 -> 0.2860
    assert abs(pixels.std() - image_sources.FASHION_MNIST_STD) < 5e-5  # 0.353024 -> 0.3530


def test_raw_files_are_read_from_fashion_mnist_dir(fashion_mnist_dir, tmp_path, monkeypatch):
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for name in fashion_mnist.RAW_FILES:
        shutil.copy(os.path.join(fashion_mnist_dir, name), copy / name)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(copy))
    assert fashion_mnist.local_dir() == str(copy) and fashion_mnist.missing_local_files() == []
    downloads = tmp_path / "downloads"
    test_images, _ = fashion_mnist.raw_arrays(str(downloads))["test"]
    assert test_images.shape == (10_000, 28, 28) and not downloads.exists()  # nothing was downloaded


def test_without_data_the_suite_says_so_in_one_line_and_does_not_download(tmp_path):
    """FASHION_MNIST_DIR pointing at an empty folder: a test that needs the data is skipped with one reason,
    and no download is tried."""
    test = tmp_path / "test_needs_data.py"
    test.write_text("def test_needs_data(fashion_test_split):\n    pass\n")
    shutil.copy(os.path.join(REPO_ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, FASHION_MNIST_DIR=str(empty), PYTHONPATH=REPO_ROOT, CI="")
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(test)]
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and f"Fashion-MNIST is not in {empty}" in skipped[0], run.stdout[-2000:]
    assert "1 skipped" in run.stdout
    assert not list(tmp_path.rglob("*.gz*")), "a download was attempted"
    # Under CI the same run is an error, before any test runs, in one line naming the missing files.
    ci = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env={**env, "CI": "true"},
                        timeout=120)
    assert ci.returncode == 4 and ci.stdout == "", ci.stdout[-2000:]  # pytest's usage error
    assert ci.stderr.startswith("ERROR: CI=true and the test data is missing: Fashion-MNIST") and \
        len(ci.stderr.strip().splitlines()) == 1 and f"t10k-labels-idx1-ubyte.gz in {empty}" in ci.stderr, ci.stderr
    assert "passed" not in ci.stdout and "skipped" not in ci.stdout


def test_under_ci_a_skipping_test_fails_with_its_reason(tmp_path):
    """CI=true: a test that calls pytest.skip (as tests/tabular's do without plotnine's wheel) is a failure."""
    test = tmp_path / "test_skips.py"
    test.write_text("import pytest\n\ndef test_skips():\n    pytest.skip('no wheel here')\n")
    shutil.copy(os.path.join(REPO_ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, CI="true")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 1 and "1 failed" in run.stdout, run.stdout[-2000:]
    assert "CI=true: a test may not skip" in run.stdout and "no wheel here" in run.stdout, run.stdout[-2000:]
