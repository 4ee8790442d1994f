"""Multi-label: F-beta and the threshold search on hand-computed cases, the loss and step metrics, the
Fashion-MNIST mosaics (TFDS builder on the real images); the small preset's run and its floor are in
tests/test_experiments.py."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO_ROOT
from research.core.errors import InputError
from research.vision import fashion_mnist, fashion_mosaics, multilabel


def test_fbeta_per_example_hand_computed():
    predicted = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1]])
    targets = np.array([[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 1]])
    # row 0: tp 1, fp 1, fn 1 -> F2 = 5/(5+4+1), F1 = 2/(2+1+1); row 1: tp 1, fp 2 -> F2 = 5/7, F1 = 2/4;
    # row 2: nothing true, nothing predicted -> 1; row 3: a miss -> 0; row 4: exact -> 1.
    np.testing.assert_allclose(multilabel.fbeta_per_example(predicted, targets, 2.0), [0.5, 5 / 7, 1, 0, 1])
    np.testing.assert_allclose(multilabel.fbeta_per_example(predicted, targets, 1.0), [0.5, 0.5, 1, 0, 1])
    # The jax path (used inside the steps) agrees.
    np.testing.assert_allclose(multilabel.fbeta_per_example(jnp.asarray(predicted), jnp.asarray(targets), 2.0),
                               [0.5, 5 / 7, 1, 0, 1], rtol=1e-6)


def test_global_threshold_search_hand_computed():
    probabilities = np.array([[0.9, 0.6, 0.2], [0.3, 0.8, 0.45]])
    targets = np.array([[1, 0, 0], [0, 1, 1]])
    candidates = [0.1, 0.25, 0.4, 0.5, 0.7]
    # Mean F2 by hand: 0.1 -> (5/7 + 10/11)/2; 0.25 -> (5/6 + 10/11)/2; 0.4 -> (5/6 + 1)/2 = 11/12;
    # 0.5 -> (5/6 + 5/9)/2; 0.7 -> (1 + 5/9)/2. Best: 0.4.
    expected = {0.1: (5 / 7 + 10 / 11) / 2, 0.25: (5 / 6 + 10 / 11) / 2, 0.4: 11 / 12, 0.5: (5 / 6 + 5 / 9) / 2,
                0.7: (1 + 5 / 9) / 2}
    for t, f2 in expected.items():
        assert multilabel.mean_fbeta(probabilities, targets, t, 2.0) == pytest.approx(f2)
    threshold, score = multilabel.search_threshold(probabilities, targets, 2.0, candidates)
    assert threshold == 0.4 and score == pytest.approx(11 / 12)
    # F1 ties 0.4 and 0.7 at (2/3 + 1)/2 = 5/6: the smaller threshold wins.
    threshold, score = multilabel.search_threshold(probabilities, targets, 1.0, candidates)
    assert threshold == 0.4 and score == pytest.approx(5 / 6)


def test_per_class_thresholds_beat_a_shared_one_hand_computed():
    # Class 0 needs a high threshold (0.6 is a false positive), class 1 a low one (0.2 is a true positive).
    probabilities = np.array([[0.9, 0.3], [0.6, 0.2]])
    targets = np.array([[1, 1], [0, 1]])
    candidates = [0.1, 0.25, 0.5, 0.7]
    # Shared: 0.1 -> (1 + 5/6)/2 = 11/12 is the best (0.25 -> 1/2, 0.5 and 0.7 -> 5/18).
    assert multilabel.search_threshold(probabilities, targets, 2.0, candidates) == (0.1, pytest.approx(11 / 12))
    thresholds, score = multilabel.search_class_thresholds(probabilities, targets, 2.0, candidates)
    np.testing.assert_array_equal(thresholds, [0.7, 0.1])
    assert score == 1.0


def test_threshold_search_rejects_mismatched_shapes():
    with pytest.raises(InputError, match=r"\(2, 3\).*\(2, 4\)"):
        multilabel.search_threshold(np.zeros((2, 3)), np.zeros((2, 4)))


def test_loss_and_masked_step_metrics_hand_computed():
    logits = jnp.array([[5.0, -5.0, 5.0], [0.0, 0.0, 0.0], [-5.0, 5.0, -5.0]])
    targets = jnp.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(multilabel.binary_cross_entropy(logits[1:2], targets[1:2]), [np.log(2)], rtol=1e-6)
    metrics = multilabel.summed_metrics(logits, targets, jnp.array([1, 0, 1]))
    # Row 0 predicts {0, 2} for {0}: F2 5/6, F1 2/3; row 1 masked out; row 2 exact.
    assert float(metrics["count"]) == 2
    assert float(metrics["f2"]) == pytest.approx(5 / 6 + 1)
    assert float(metrics["f1"]) == pytest.approx(2 / 3 + 1)
    assert float(metrics["exact_match"]) == 1
    expected_loss = np.mean([np.log1p(np.exp(-5)), np.log1p(np.exp(-5)), 5 + np.log1p(np.exp(-5))])
    expected_loss += np.log1p(np.exp(-5))  # row 2: all three right by a margin of 5
    assert float(metrics["loss"]) == pytest.approx(expected_loss, rel=1e-5)


def test_mosaics_are_made_of_real_images_with_their_labels(fashion_test_split):
    images, labels = fashion_test_split
    mosaics, multi_hot, cells = fashion_mosaics.make_mosaics(images[..., 0], labels, 300, seed=7)
    assert mosaics.shape == (300, 56, 56) and mosaics.dtype == np.uint8 and multi_hot.shape == (300, 10)
    items = (cells >= 0).sum(1)
    assert items.min() == 1 and items.max() == 4 and len(set(items)) == 4
    for m in range(300):
        np.testing.assert_array_equal(np.flatnonzero(multi_hot[m]), np.unique(cells[m][cells[m] >= 0]))
        for c in range(4):
            cell = mosaics[m, 28 * (c // 2):28 * (c // 2 + 1), 28 * (c % 2):28 * (c % 2 + 1)]
            if cells[m, c] < 0:
                assert not cell.any()
    # A filled cell is a real test image of its label (the first mosaic's first filled cell, found by search).
    c = int(np.argmax(cells[0] >= 0))
    cell = mosaics[0, 28 * (c // 2):28 * (c // 2 + 1), 28 * (c % 2):28 * (c % 2 + 1)]
    matches = np.flatnonzero((images[..., 0] == cell).all((1, 2)))
    assert len(matches) >= 1 and labels[matches[0]] == cells[0, c]
    again = fashion_mosaics.make_mosaics(images[..., 0], labels, 300, seed=7)
    np.testing.assert_array_equal(again[0], mosaics)  # seeded: the same every time


@pytest.fixture(scope="module")
def mosaics_dir(tfds_dir):
    """The 'small' FashionMosaics config built into the session's TFDS dir (from the real idx files)."""
    fashion_mosaics.load("test", tfds_dir, "small")
    return tfds_dir


def test_tfds_builder_writes_the_seeded_mosaics(mosaics_dir, tmp_path):
    test_images, test_labels = fashion_mosaics.load("test", mosaics_dir, "small")
    assert test_images.shape == (500, 56, 56, 1) and test_labels.shape == (500, 10)
    idx_images, idx_labels = fashion_mnist.raw_arrays(str(tmp_path))["test"]  # the idx files' order
    expected, expected_labels, _ = fashion_mosaics.make_mosaics(idx_images, idx_labels, 500,
                                                                fashion_mosaics.SEEDS["test"])
    np.testing.assert_array_equal(test_images[..., 0], expected)  # PNG round trip is lossless
    np.testing.assert_array_equal(test_labels, expected_labels)
    train_images, _ = fashion_mosaics.load("train", mosaics_dir, "small")
    validation_images, _ = fashion_mosaics.load("validation", mosaics_dir, "small")
    assert len(train_images) == 2000 and len(validation_images) == 500


def test_lr_find_cli_sweeps_the_mosaics_experiment(mosaics_dir, tmp_path):
    """scripts/lr_find.py on a second experiment (multi-label, sigmoid BCE, 28 px first stage) through its
    `setup`: the curve falls before it diverges and the suggestions lie inside the sweep."""
    run = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "scripts", "lr_find.py"), "--config",
         os.path.join(REPO_ROOT, "experiments", "fashion_mosaics_multilabel.py") + ":small", "--workdir",
         str(tmp_path), f"--config.data_dir={mosaics_dir}", "--config.lr_find.num_steps=30",
         "--config.lr_find.start_lr=1e-4"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "suggestions: bottom" in run.stdout
    result = json.load(open(tmp_path / "lr_find.json"))
    assert result["num_steps"] > 10
    assert min(result["smoothed_losses"]) < result["smoothed_losses"][0]
    assert all(1e-4 <= v <= 10 for v in result["suggestions"].values()), result["suggestions"]
