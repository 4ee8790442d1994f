"""Lesson 2's multi-label recipe on the Fashion-MNIST mosaics (experiments/fashion_mosaics_multilabel.py): a small
ResNet with fastai's concat-pool head, sigmoid outputs and binary cross-entropy, progressive resizing (one 1cycle
fit per (size, epochs) stage, the weights carried over), then thresholds searched for the best F-beta on the
validation mosaics and F2 / F1 scored once on the test mosaics, with and without test-time augmentation."""

import functools
import json
import os

import jax
import ml_collections
import numpy as np

from research.core import experiment, sharding, trainer
from research.core.train_state import create_train_state
from research.vision import architectures, augment, fashion_mnist, fashion_mosaics, multilabel, pipeline
from research.vision.image_arrays import image_batches

THRESHOLDS_FILE = "thresholds.json"


def make_model(config):
    """The small ResNet of `config.model` (global pooling, so any input size) with fastai's concat-pool head
    (`config.head`): max pooling finds an item in one cell of the mosaic as well as in all four."""
    return architectures.small_resnet(config.model, fashion_mosaics.NUM_CLASSES).clone(
        head=architectures.fastai_head(config.head))


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


def predict_at(size: int):
    """Logits of images resized to `size`: the model's input at the stage of that size."""
    return lambda state, x: multilabel.predict(state, augment.resize(x, size))


def probabilities_at(state, images, size: int, config, mesh, mean: float, std: float, tta: bool) -> np.ndarray:
    """Sigmoid probabilities of `images` resized to `size`; with `tta`, mixed with those of the views that
    follow the training augmentation."""
    views = tta_views(config) if tta else None
    return pipeline.predict_probabilities(predict_at(size), state, images, config.eval_batch_size, mesh, mean, std,
                                          views=views, beta=config.tta_beta, activation=jax.nn.sigmoid)


def scores(probabilities_NxK, labels_NxK, thresholds) -> dict[str, float]:
    return {"f2": multilabel.mean_fbeta(probabilities_NxK, labels_NxK, thresholds, 2.0),
            "f1": multilabel.mean_fbeta(probabilities_NxK, labels_NxK, thresholds, 1.0)}


def search(config, probabilities_NxK, labels_NxK):
    """(thresholds, F-beta on these labels): one for all classes, or one per class."""
    if config.per_class_thresholds:
        thresholds, fbeta = multilabel.search_class_thresholds(probabilities_NxK, labels_NxK, config.beta)
        return [float(t) for t in thresholds], fbeta
    return multilabel.search_threshold(probabilities_NxK, labels_NxK, config.beta)


def load(config):
    """The (images, multi-hot labels) of the train, validation and test mosaics `config.data_config` names."""
    return [fashion_mosaics.load(split, config.data_dir or None, config.data_config)
            for split in ("train", "validation", "test")]


def statistics(images) -> tuple[float, float]:
    """The mean and standard deviation of the training pixels, in [0, 1]."""
    return float(images.mean() / 255), float(images.std() / 255)


def stage_setup(config, mesh, train, mean, std, stage: int) -> experiment.Setup:
    """The trainable pieces of one progressive-resizing stage (its image size and its own data order)."""
    size = config.sizes[stage]
    model = make_model(config)
    return experiment.Setup(
        create_state=lambda tx, rng: create_train_state(model, tx, rng, (1, size, size, 1)),
        make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
        train_step=multilabel.make_train_step(), eval_step=multilabel.eval_step,
        batches=image_batches(*train, config.batch_size, mesh, config.seed + stage, mean, std,
                              make_augment_fn(config, size)))


def setup(config, mesh) -> experiment.Setup:
    """The first stage (its size, data and optimizer): what scripts/lr_find.py sweeps."""
    train, _, _ = load(config)
    mean, std = statistics(train[0])
    return stage_setup(config, mesh, train, mean, std, 0)


def stage_workdir(workdir: str, config, stage: int) -> str:
    return os.path.join(workdir, f"stage{stage}_{config.sizes[stage]}px")


def train_stages(config, workdir: str, train, validation, mean, std, mesh, timer):
    """Trains stage by stage, each stage from the previous one's weights with a fresh 1cycle; returns the last
    state and each stage's record (size, epochs, steps, validation F-scores at threshold 0.5)."""
    val_images, val_labels = validation
    stages = []
    params = batch_stats = None
    for stage, (size, epochs) in enumerate(zip(config.sizes, config.epochs)):
        run = stage_setup(config, mesh, train, mean, std, stage)
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
                                  workdir=stage_workdir(workdir, config, stage), evaluate=evaluate,
                                  checkpoint_every=total_steps, log_every=config.log_every,
                                  keep_checkpoints=config.checkpoint.keep, skip_nonfinite=config.skip_nonfinite)
        params, batch_stats = state.params, state.batch_stats
        if not evaluated:  # resumed from this stage's final checkpoint
            evaluate(state)
        stages.append({"size": size, "epochs": epochs, "steps": total_steps, **evaluated})
    return state, stages


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains stage by stage, searches thresholds on validation, scores the test mosaics once; writes
    results.json (and thresholds.json, preprocessing.json for predictions) into `workdir`."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        train, (val_images, val_labels), (test_images, test_labels) = load(config)
    mean, std = statistics(train[0])
    size = config.sizes[-1]
    pipeline.save_preprocessing(workdir, size, 1, mean, std, fashion_mnist.CLASS_NAMES)
    state, stages = train_stages(config, workdir, train, (val_images, val_labels), mean, std, mesh, timer)

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


def predict(config, workdir: str, input_path: str) -> list[dict]:
    """Prediction rows for the images under `input_path` (a folder or a CSV): file, the classes above the run's
    validation thresholds and their probabilities, and the top 3; the last stage's final weights."""
    with open(os.path.join(workdir, THRESHOLDS_FILE)) as f:
        chosen = json.load(f)
    last = len(config.sizes) - 1
    state_for = lambda saved: pipeline.restore_for_prediction(stage_workdir(workdir, config, last),
                                                              make_model(config), saved)
    views = tta_views(config) if chosen["tta"] else None
    return pipeline.predict_image_files(workdir, input_path, state_for, predict_at(config.sizes[-1]),
                                        jax.nn.sigmoid, views, chosen["thresholds"])
