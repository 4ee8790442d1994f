"""K seeds (and a learning-rate sweep) trained as one vmapped program equal K separate single runs, step by
step, on real Fashion-MNIST images, through the real trainer (checkpoints, an interruption and a resume)."""

import json
import os

import numpy as np
import pytest

from research.core import experiment, seeds, sharding
from research.vision import classifier as image_classifier

NUM_STEPS = 6
PEAK_LR = 3e-3


def _config(tfds_dir, seed=5):
    c = image_classifier.get_config("cpu", "tests/test_seeds.py")
    c.data_dir = tfds_dir
    c.data.update(train_examples=400, test_examples=100)
    c.model.update(stem_width=8, stage_sizes=(1, 1), stage_widths=(8, 16), stage_strides=(2, 2))
    c.update(batch_size=32, num_epochs=1, log_every=1, seed=seed)
    c.checkpoint.update(best_metric="", every_epochs=100)
    return c


def _train_losses(workdir, key="train_loss"):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return np.array([row[key] for row in rows if key in row])


@pytest.fixture(scope="module")
def single_runs(tfds_dir, tmp_path_factory):
    """Per-step training losses of single runs: {(seed, peak rate): losses}."""
    mesh = sharding.make_mesh(1)
    runs = {}
    for seed, rate in [(5, PEAK_LR), (6, PEAK_LR), (7, PEAK_LR), (5, 1e-3), (5, 1e-2)]:
        config = _config(tfds_dir, seed)
        workdir = str(tmp_path_factory.mktemp(f"single_{seed}_{rate}"))
        setup = image_classifier.setup(config, mesh, image_classifier.Recipe())
        experiment.fit(config, workdir, setup, rate, mesh, num_steps=NUM_STEPS)
        runs[seed, rate] = _train_losses(workdir)
    return runs


def test_three_seeds_vmapped_match_three_single_runs_per_step_through_a_resume(tfds_dir, tmp_path, single_runs):
    config = _config(tfds_dir)
    mesh = sharding.make_mesh(1)
    setup = image_classifier.setup(config, mesh, image_classifier.Recipe())
    members = seeds.seed_range(5, 3)
    workdir = str(tmp_path)
    seeds.fit(config, workdir, setup, members, PEAK_LR, mesh, num_steps=NUM_STEPS, stop_at=3)  # interrupted
    states = seeds.fit(config, workdir, setup, members, PEAK_LR, mesh, num_steps=NUM_STEPS)  # resumed
    assert [int(step) for step in states.step] == [NUM_STEPS] * 3
    for seed in (5, 6, 7):
        single = single_runs[seed, PEAK_LR]
        vmapped = _train_losses(workdir, f"train_loss/seed{seed}")
        assert len(single) == len(vmapped) == NUM_STEPS
        np.testing.assert_allclose(vmapped, single, rtol=1e-5)
    # the seeds really differ (own init, data and dropout), and the logged mean is their mean
    assert np.ptp([single_runs[seed, PEAK_LR][0] for seed in (5, 6, 7)]) > 1e-3
    np.testing.assert_allclose(_train_losses(workdir), np.mean([single_runs[s, PEAK_LR] for s in (5, 6, 7)], 0),
                               rtol=1e-5)


def test_learning_rate_sweep_vmapped_matches_single_runs_per_step(tfds_dir, tmp_path, single_runs):
    config = _config(tfds_dir)
    mesh = sharding.make_mesh(1)
    setup = image_classifier.setup(config, mesh, image_classifier.Recipe())
    rates = (1e-3, PEAK_LR, 1e-2)
    members = seeds.sweep([5], "learning_rate", rates)
    seeds.fit(config, str(tmp_path), setup, members, PEAK_LR, mesh, num_steps=NUM_STEPS)
    for rate, name in zip(rates, members.names()):
        assert name == f"seed5_learning_rate={rate:g}"
        np.testing.assert_allclose(_train_losses(tmp_path, f"train_loss/{name}"), single_runs[5, rate], rtol=1e-5)
        # 1cycle scaled by the member's own peak: the logged rate at step 2 is the single run's
        rates_logged = _train_losses(tmp_path, f"learning_rate/{name}")
        assert rates_logged.max() == pytest.approx(rate, rel=1e-2)


def test_members_names_and_bad_hyperparameter(tfds_dir):
    members = seeds.sweep([0, 1], "weight_decay", [0.0, 0.1])
    assert members.seeds == (0, 1, 0, 1)
    assert members.names() == ["seed0_weight_decay=0", "seed1_weight_decay=0",
                               "seed0_weight_decay=0.1", "seed1_weight_decay=0.1"]
    config = _config(tfds_dir)
    setup = image_classifier.setup(config, sharding.make_mesh(1), image_classifier.Recipe())
    states = seeds.create_states(setup.create_state, setup.make_tx(1e-3, 10), members)
    np.testing.assert_array_equal(states.opt_state.hyperparams["weight_decay"], np.float32([0, 0, 0.1, 0.1]))
    with pytest.raises(Exception, match="injects no hyperparameter 'dropout'"):
        seeds.create_states(setup.create_state, setup.make_tx(1e-3, 10), seeds.sweep([0], "dropout", [0.1]))
