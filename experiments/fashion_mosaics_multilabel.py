"""Lesson 2 offline: multi-label classification of Fashion-MNIST mosaics (a stand-in for the planet data).

Sigmoid outputs and binary cross-entropy; light augmentation (1-pixel shifts); progressive resizing as in
the planet lesson (1cycle at 28 px, then 1cycle at 56 px, the weights carried over); per-class thresholds
searched for the best F2 on the validation mosaics, then F2 and F1 on the 10k held-out test mosaics at those
thresholds, with and without test-time augmentation.

Run:
  .venv/bin/python scripts/train.py --config experiments/fashion_mosaics_multilabel.py --workdir runs/mosaics
Predict (the classes above their thresholds) for new images:
  .venv/bin/python scripts/predict.py --workdir runs/mosaics --input DIR_OR_CSV --output predictions.csv

Reaches (measured on the 2-core CPU): test F2 0.932 (0.932 without TTA), F1 0.898; validation F2 0.937.
1 epoch at 28 px + 2 at 56 px of 40k mosaics, 485 s for the whole command on the idle 2-core CPU
(45 s + 350 s of training), the mosaics already built (building them takes ~1-2 min once).
"""

import functools
import json
import os

import jax
import ml_collections
import numpy as np

from research.core import configs, experiment, inference, sharding, trainer
from research.core.train_state import create_train_state
from research.vision import augment, fashion_mnist, fashion_mosaics, multilabel, pipeline
from research.vision.head import FastaiHead
from research.vision.image_arrays import image_batches
from research.vision.resnet import BasicBlock, ResNet

THRESHOLDS_FILE = "thresholds.json"


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    configs.check_preset(preset, ("cpu", "small"), "experiments/fashion_mosaics_multilabel.py")
    c = configs.base()
    c.data_config = "default"  # the FashionMosaics builder config: "default" (40k/5k/10k) or "small" (2k/500/500)
    c.model = ml_collections.ConfigDict(dict(
        stem_width=32, stem_stride=2, stage_sizes=(1, 1, 2), stage_widths=(32, 64, 128), stage_strides=(1, 2, 2),
        head_dropout=0.1))
    c.eval_batch_size = 500
    # Progressive resizing: one 1cycle fit per (size, epochs) stage, the weights carried from one to the next.
    del c.num_epochs
    c.sizes = (28, 56)
    c.epochs = (1, 2)
    c.learning_rate = 1e-2
    # Training augmentation (research/augment.py). The mosaics' items are upright product photos, so the
    # symmetries of the square (`dihedral`, right for satellite images) are off by default.
    c.augment = ml_collections.ConfigDict(dict(dihedral=False, crop_padding=1, max_zoom=1.0, brightness=0.0,
                                               contrast=0.0))
    c.tta = True  # views follow the augmentation: the 8 symmetries (dihedral) and/or 1-pixel shifts
    c.tta_beta = ml_collections.config_dict.placeholder(float)  # weight of the plain view; None: one view of all
    c.beta = 2.0  # the F-beta to maximise (2: the planet competition's F2)
    c.per_class_thresholds = True  # False: one threshold for all classes
    if preset == "small":  # a quick run on the small mosaics (tests)
        c.data_config = "small"
        c.model.update(stem_width=16, stage_widths=(16, 32, 64), stage_sizes=(1, 1, 1))
        c.batch_size = 50
        c.epochs = (6, 1)
        c.learning_rate = 2e-2
    return c


def make_model(config) -> ResNet:
    """A small ResNet (global pooling, so any input size) with fastai's concat-pool head: max pooling finds
    an item in one cell of the mosaic as well as in all four."""
    m = config.model
    return ResNet(stage_sizes=tuple(m.stage_sizes), block_cls=BasicBlock, num_classes=fashion_mosaics.NUM_CLASSES,
                  stage_widths=tuple(m.stage_widths), stage_strides=tuple(m.stage_strides),
                  stem_width=m.stem_width, stem_kernel=3, stem_stride=m.stem_stride, stem_pool=False,
                  head=functools.partial(FastaiHead, hidden=(), dropout=m.head_dropout))


def make_augment_fn(config, size: int):
    """The training augmentation, then the resize to this stage's `size` (all inside the batch's jit)."""
    a = config.augment
    fns = []
    if a.dihedral:
        fns.append(augment.random_dihedral)
    if a.crop_padding:
        fns.append(functools.partial(augment.random_crop_with_padding, padding=a.crop_padding, pad_mode="edge"))
    if a.max_zoom > 1:
        fns.append(functools.partial(augment.random_zoom, max_zoom=a.max_zoom))
    if a.brightness or a.contrast:
        fns.append(functools.partial(augment.random_brightness_contrast, brightness=a.brightness,
                                     contrast=a.contrast))
    fns.append(lambda rng, images: augment.resize(images, size))
    return augment.compose(*fns)


def tta_views(config):
    """The test-time views that follow the training augmentation: the 8 symmetries and/or 1-pixel shifts."""
    return functools.partial(augment.tta_views, dihedral_group=config.augment.dihedral,
                             shift_pixels=min(config.augment.crop_padding, 1), pad_mode="edge")


def probabilities_at(state, images, size: int, config, mesh, mean: float, std: float, tta: bool) -> np.ndarray:
    """Sigmoid probabilities of `images` resized to `size`; with `tta`, mixed with those of the views that
    follow the training augmentation."""
    predict = lambda state, x: multilabel.predict(state, augment.resize(x, size))
    views = tta_views(config) if tta else None
    return pipeline.predict_probabilities(predict, state, images, config.eval_batch_size, mesh, mean, std, views=views,
                                 beta=config.tta_beta, activation=jax.nn.sigmoid)


def scores(probabilities_NxK, labels_NxK, thresholds) -> dict[str, float]:
    return {"f2": multilabel.mean_fbeta(probabilities_NxK, labels_NxK, thresholds, 2.0),
            "f1": multilabel.mean_fbeta(probabilities_NxK, labels_NxK, thresholds, 1.0)}


def search(config, probabilities_NxK, labels_NxK):
    """(thresholds, F-beta on these labels): one for all classes, or one per class."""
    if config.per_class_thresholds:
        thresholds, fbeta = multilabel.search_class_thresholds(probabilities_NxK, labels_NxK, config.beta)
        return [float(t) for t in thresholds], fbeta
    return multilabel.search_threshold(probabilities_NxK, labels_NxK, config.beta)


def _load(config):
    load = lambda split: fashion_mosaics.load(split, config.data_dir or None, config.data_config)
    return [load(split) for split in ("train", "validation", "test")]


def _stage_setup(config, mesh, train, mean, std, stage: int) -> experiment.Setup:
    size = config.sizes[stage]
    model = make_model(config)
    return experiment.Setup(
        create_state=lambda tx, rng: create_train_state(model, tx, rng, (1, size, size, 1)),
        make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
        train_step=multilabel.make_train_step(),
        batches=image_batches(*train, config.batch_size, mesh, config.seed + stage, mean, std,
                              make_augment_fn(config, size)))


def setup(config, mesh) -> experiment.Setup:
    """The first stage (its size, data and optimizer): what scripts/lr_find.py sweeps."""
    train, _, _ = _load(config)
    mean, std = _statistics(train[0])
    return _stage_setup(config, mesh, train, mean, std, 0)


def _statistics(images) -> tuple[float, float]:
    return float(images.mean() / 255), float(images.std() / 255)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains stage by stage, searches thresholds on validation, scores the test mosaics once; writes
    results.json (and thresholds.json, preprocessing.json for predictions) into `workdir`."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        train, (val_images, val_labels), (test_images, test_labels) = _load(config)
    mean, std = _statistics(train[0])
    size = config.sizes[-1]
    pipeline.save_preprocessing(workdir, size, 1, mean, std, fashion_mnist.CLASS_NAMES)
    stages = []
    params = batch_stats = None
    for stage, (size, epochs) in enumerate(zip(config.sizes, config.epochs)):
        run = _stage_setup(config, mesh, train, mean, std, stage)
        total_steps = epochs * run.batches.steps_per_epoch
        state = run.create_state(run.make_tx(config.learning_rate, total_steps), jax.random.key(config.seed))
        if params is not None:  # progressive resizing: the previous stage's weights, a fresh 1cycle
            state = state.replace(params=params, batch_stats=batch_stats)
        evaluated = {}

        def evaluate(state, size=size, evaluated=evaluated):
            probabilities = probabilities_at(state, val_images, size, config, mesh, mean, std, tta=False)
            evaluated.update({f"valid_{k}_at_0.5": v for k, v in scores(probabilities, val_labels, 0.5).items()})
            return dict(evaluated)

        with timer(f"train_stage{stage}"):
            state = trainer.train(state=state, train_step=run.train_step, batches=run.batches,
                                  num_steps=total_steps, mesh=mesh, seed=config.seed + stage,
                                  workdir=os.path.join(workdir, f"stage{stage}_{size}px"), evaluate=evaluate,
                                  checkpoint_every=total_steps, log_every=config.log_every,
                                  keep_checkpoints=config.checkpoint.keep, skip_nonfinite=config.skip_nonfinite)
        params, batch_stats = state.params, state.batch_stats
        if not evaluated:  # resumed from this stage's final checkpoint
            evaluate(state)
        stages.append({"size": size, "epochs": epochs, "steps": total_steps, **evaluated})

    # Thresholds from the validation mosaics, scores on the held-out test mosaics (one pass over both).
    metrics, thresholds_chosen, num_val = {}, None, len(val_labels)
    both_images = np.concatenate([val_images, test_images])
    with timer("thresholds_and_test"):
        for name, tta in [("", config.tta), ("_no_tta", False)] if config.tta else [("", False)]:
            probabilities = probabilities_at(state, both_images, size, config, mesh, mean, std, tta)
            thresholds, val_fbeta = search(config, probabilities[:num_val], val_labels)
            thresholds_chosen = thresholds_chosen or {"thresholds": thresholds, "tta": tta}
            metrics.update({f"valid_fbeta{name}": val_fbeta,
                            **{f"test_{k}{name}": v for k, v in
                               scores(probabilities[num_val:], test_labels, thresholds).items()}})
    if jax.process_index() == 0:
        with open(os.path.join(workdir, THRESHOLDS_FILE), "w") as f:
            json.dump(thresholds_chosen, f)
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, stages=stages,
                                    thresholds=thresholds_chosen["thresholds"], test_examples=len(test_labels))


def predict(config, workdir: str, input_path: str, output_path: str) -> int:
    """The classes above the run's validation thresholds for the images under `input_path` (a folder or a CSV):
    a CSV of file, predicted classes and their probabilities, and the top 3."""
    with open(os.path.join(workdir, THRESHOLDS_FILE)) as f:
        chosen = json.load(f)
    size = config.sizes[-1]

    def state_for(saved):
        state = create_train_state(make_model(config), experiment.one_cycle_optimizer(config, 1e-3, 0),
                                   jax.random.key(config.seed), (1, size, size, 1))
        return inference.restore_trained(os.path.join(workdir, f"stage{len(config.sizes) - 1}_{size}px"), state)

    views = tta_views(config) if chosen["tta"] else None
    return pipeline.predict_image_files(workdir, input_path, output_path, state_for,
                                      lambda state, x: multilabel.predict(state, augment.resize(x, size)),
                                      jax.nn.sigmoid, views, chosen["thresholds"])
