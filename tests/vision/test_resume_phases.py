"""Runs made of several phases, interrupted in the middle and run again, end bit for bit where an uninterrupted
run ends: fastai's fine-tuning (a frozen-body head phase, then unfrozen SGDR cycles; stopped inside the head
phase, and at the end of an SGDR cycle) and progressive resizing (the mosaics experiment, stopped
inside its 56 px stage). Each phase trains in its own sub-workdir and resumes from its latest checkpoint there;
the interruption is `trainer.train(stop_at=...)`, which saves the step it stops at as a crash-safe run would
have, followed by an exception that ends the run as a crash would.
"""

import functools
import os

import jax
import numpy as np
import pytest

from experiments import fashion_mosaics_multilabel as mosaics
from research.core import classification, configs, experiment, finetune, sharding, trainer
from research.core.checkpoint import Checkpointer
from research.vision import augment, resnet
from research.vision.head import FastaiHead
from research.vision.image_arrays import image_batches


class Interrupted(Exception):
    """The run ended at `stop_at`, as if killed just after that step's checkpoint."""


class RecordedBatches:
    """A batch source that records which steps it served: a resumed phase must not run its steps again."""

    def __init__(self, batches):
        self.batches, self.steps_per_epoch, self.served = batches, batches.steps_per_epoch, []

    def batch(self, step):
        self.served.append(step)
        return self.batches.batch(step)


RECIPE = finetune.Recipe(head_steps=8, head_lr=1e-2, finetune_lr=1e-2, cycle_steps=4, cycle_mult=2, num_cycles=2)


@pytest.fixture(scope="module")
def transfer_setup(fashion_test_split):
    """A tiny ResNet with fastai's head, its initial variables (host copies), and 100 real images of classes
    5-9 (labels 0-4) in batches of 25 with flips and crops: 4 steps an epoch."""
    images, labels = fashion_test_split
    keep = labels >= 5
    images, labels = images[keep][:100], labels[keep][:100] - 5
    mesh = sharding.make_mesh()
    batches = image_batches(images, labels, 25, mesh, 0, 0.286, 0.353,
                            functools.partial(augment.augment, flip=True, crop_padding=2))
    model = resnet.small_resnet(num_classes=5, stage_sizes=(1, 1), stage_widths=(8, 16), stem_width=8).clone(
        head=functools.partial(FastaiHead, hidden=(16,)))
    variables = jax.device_get(jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32)))
    return model, variables, batches, mesh


def fine_tune(transfer_setup, workdir, interrupt=None):
    """finetune.fine_tune with `train` on trainer.train in workdir/<phase>; `interrupt=(phase, step)` stops that
    phase at that step and raises Interrupted. Returns (final state as host arrays, {phase: steps served})."""
    model, variables, batches, mesh = transfer_setup
    served = {}
    train_step = classification.make_train_step(0.1)

    def train(state, num_steps, subdir, **kwargs):
        stop_at = interrupt[1] if interrupt and interrupt[0] == subdir else None
        source = served[subdir] = RecordedBatches(batches)
        state = trainer.train(state=state, train_step=train_step, batches=source, num_steps=num_steps, mesh=mesh,
                              seed=0, workdir=os.path.join(workdir, subdir), stop_at=stop_at, progress=False,
                              **kwargs)
        if stop_at is not None:
            raise Interrupted(f"{subdir} at step {stop_at}")
        return state

    state, _ = finetune.fine_tune(model, variables, RECIPE, functools.partial(experiment.optimizer, configs.base()),
                                  train)
    return jax.device_get({"params": state.params, "batch_stats": state.batch_stats, "opt_state": state.opt_state,
                           "step": state.step}), {k: v.served for k, v in served.items()}


@pytest.fixture(scope="module")
def uninterrupted(transfer_setup, tmp_path_factory):
    final, served = fine_tune(transfer_setup, str(tmp_path_factory.mktemp("straight")))
    assert served == {"head": list(range(8)), "finetune": list(range(12))}
    assert finetune.cycle_ends(RECIPE) == [4, 12]
    return final


@pytest.mark.parametrize("phase, stop_at", [
    ("head", 5),  # inside the frozen-body phase
    ("finetune", 4)])  # at the end of the first SGDR cycle (its checkpoint_steps), where the rate restarts
def test_fine_tuning_interrupted_then_rerun_equals_an_uninterrupted_run(transfer_setup, uninterrupted, tmp_path,
                                                                        phase, stop_at):
    with pytest.raises(Interrupted):
        fine_tune(transfer_setup, str(tmp_path), interrupt=(phase, stop_at))
    final, served = fine_tune(transfer_setup, str(tmp_path))
    # The rerun resumed where the first run stopped: no phase ran a step twice.
    head_from = stop_at if phase == "head" else 8
    finetune_from = stop_at if phase == "finetune" else 0
    assert served == {"head": list(range(head_from, 8)), "finetune": list(range(finetune_from, 12))}
    for name in ("params", "batch_stats", "opt_state", "step"):
        jax.tree.map(np.testing.assert_array_equal, final[name], uninterrupted[name])


# --------------------------------------------------------------------------------- progressive resizing

@pytest.fixture(scope="module")
def mosaics_config(tfds_dir):
    """The mosaics experiment's small preset, cut down: 1 epoch at 28 px then 1 at 56 px (20 steps each, batch
    100 of the 2000 small mosaics), no TTA."""
    config = mosaics.get_config("small")
    config.update_from_flattened_dict({"data_dir": tfds_dir, "epochs": (1, 1), "batch_size": 100, "tta": False,
                                       "model.stem_width": 8, "model.stage_widths": (8, 16, 32)})
    return config


def _final_stage(workdir: str) -> list[np.ndarray]:
    checkpoints = os.path.join(workdir, "stage1_56px", "checkpoints")
    restored = Checkpointer(checkpoints).manager.restore(20)
    return [np.asarray(leaf) for leaf in jax.tree.leaves(restored["state"])]


def test_progressive_resizing_interrupted_in_its_second_stage_equals_an_uninterrupted_run(mosaics_config, tmp_path,
                                                                                           monkeypatch):
    straight = mosaics.train_and_evaluate(mosaics_config, str(tmp_path / "straight"))
    real_train = trainer.train
    started = []

    def train_stopping_in_stage1(**kwargs):
        stage = os.path.basename(kwargs["workdir"])
        started.append(stage)
        if stage == "stage1_56px":
            real_train(**kwargs, stop_at=7)
            raise Interrupted("stage1_56px at step 7")
        return real_train(**kwargs)

    monkeypatch.setattr(trainer, "train", train_stopping_in_stage1)  # the experiment calls trainer.train
    workdir = str(tmp_path / "interrupted")
    with pytest.raises(Interrupted):
        mosaics.train_and_evaluate(mosaics_config, workdir)
    assert started == ["stage0_28px", "stage1_56px"]
    assert Checkpointer(os.path.join(workdir, "stage1_56px", "checkpoints")).latest_step() == 7
    monkeypatch.setattr(trainer, "train", real_train)
    resumed = mosaics.train_and_evaluate(mosaics_config, workdir)
    for a, b in zip(_final_stage(workdir), _final_stage(str(tmp_path / "straight")), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed["metrics"] == straight["metrics"] and resumed["thresholds"] == straight["thresholds"]
    assert resumed["stages"] == straight["stages"]
