"""Lesson 1 on Fashion-MNIST: LR range test -> 1cycle fit at the suggested rate -> test accuracy, TTA,
confusion matrix, top losses, checkpoint.

Run (default preset, sized for a 2-core CPU):
  .venv/bin/python scripts/train.py --config experiments/fashion_mnist.py --workdir runs/fashion_mnist
Longer preset, for accelerators:
  .venv/bin/python scripts/train.py --config experiments/fashion_mnist.py:long --workdir runs/fashion_mnist_long

Reaches (README "Results" has the times and the machine): the cpu preset 92.50% test accuracy in 3 epochs
(261 s of training on a 2-core CPU; 6.5 min for the README's whole first command); the long preset 93.70%
(94.09% with TTA) in 15 epochs (1312 s on the same CPU).
"""

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research import augment, classification, lr_finder, optimizers, plots, schedules, sharding, trainer
from research.data import fashion_mnist
from research.data.in_memory import InMemoryImages
from research.evaluation import make_evaluator, predict_probabilities
from research.models.resnet import small_resnet
from research.train_state import create_train_state

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    if preset not in ("cpu", "long"):
        raise ValueError(f"unknown preset {preset!r} for experiments/fashion_mnist.py: use 'cpu' or 'long'")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data_dir = ""  # TFDS data directory; "" = TFDS's default (~/tensorflow_datasets)
    c.num_devices = 0  # 0 = all devices on the mesh
    c.train_examples = 0  # > 0 trains on the first N training images only (quick runs, tests)
    c.test_examples = 0  # > 0 evaluates on the first N test images only
    c.model = ml_collections.ConfigDict(dict(
        stem_width=32, stem_stride=2, stage_sizes=(1, 1, 2), stage_widths=(32, 64, 128), stage_strides=(1, 2, 2)))
    c.batch_size = 128
    c.eval_batch_size = 1000
    c.num_epochs = 3
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", weight_decay=0.01, nesterov=False, b2=0.99, clip_norm=0.0))
    c.learning_rate = 0.0  # > 0 skips the LR range test and uses this peak rate
    c.lr_find = ml_collections.ConfigDict(dict(
        start_lr=1e-6, end_lr=10.0, num_steps=80, suggestion="bottom",
        compiled=False))  # True: one lax.scan (faster on accelerators); False: a loop of jitted steps (CPU)
    c.one_cycle = ml_collections.ConfigDict(dict(
        pct_start=0.25, div_factor=25.0, final_div_factor=1e4, max_momentum=0.95, min_momentum=0.85))
    c.label_smoothing = 0.1
    c.augment = ml_collections.ConfigDict(dict(flip=False, crop_padding=0))
    c.tta = True
    c.log_every = 50
    c.checkpoint_every_epochs = 1
    c.top_losses = 16
    if preset == "long":
        c.num_epochs = 15
        c.augment.flip = True
        c.augment.crop_padding = 2
    return c


def make_model(config):
    return small_resnet(num_classes=len(fashion_mnist.CLASS_NAMES), stage_sizes=tuple(config.model.stage_sizes),
                        stage_widths=tuple(config.model.stage_widths),
                        stage_strides=tuple(config.model.stage_strides), stem_width=config.model.stem_width,
                        stem_stride=config.model.stem_stride)


def load_data(config):
    """(train_images, train_labels, test_images, test_labels): uint8 NxHxWx1 images, int32 labels."""
    train_images, train_labels = fashion_mnist.load("train", config.data_dir or None)
    test_images, test_labels = fashion_mnist.load("test", config.data_dir or None)
    if config.train_examples:
        train_images, train_labels = train_images[:config.train_examples], train_labels[:config.train_examples]
    if config.test_examples:
        test_images, test_labels = test_images[:config.test_examples], test_labels[:config.test_examples]
    return train_images, train_labels, test_images, test_labels


def make_batches(config, images, labels, mesh) -> InMemoryImages:
    augment_fn = None
    if config.augment.flip or config.augment.crop_padding:
        augment_fn = functools.partial(augment.augment, flip=config.augment.flip,
                                       crop_padding=config.augment.crop_padding)
    return InMemoryImages(images, labels, config.batch_size, mesh, config.seed, MEAN, STD, augment_fn)


def make_tx(config, learning_rate, total_steps: int):
    """The fit's optimizer: 1cycle on the rate (and on momentum/beta1) when total_steps > 0, else constant."""
    o = config.optimizer
    momentum = 0.9
    if total_steps:
        cycle = config.one_cycle
        learning_rate = schedules.one_cycle(total_steps, learning_rate, cycle.pct_start, cycle.div_factor,
                                            cycle.final_div_factor)
        momentum = schedules.one_cycle_momentum(total_steps, cycle.pct_start, cycle.max_momentum,
                                                cycle.min_momentum)
    return optimizers.make_optimizer(o.name, learning_rate, momentum, o.weight_decay, o.nesterov, o.b2,
                                     clip_norm=o.clip_norm or None)


def tta_views(config) -> tuple[bool, int]:
    """(flip, shift) of the test-time views: those of the training augmentation, else 1-pixel shifts."""
    if config.augment.flip or config.augment.crop_padding:
        return config.augment.flip, min(config.augment.crop_padding, 1)
    return False, 1


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop_at: int | None = None) -> dict:
    """Runs the lesson-1 flow and writes results.json, metrics, plots and checkpoints into `workdir`."""
    started = time.time()
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(config.num_devices or None)
    train_images, train_labels, test_images, test_labels = load_data(config)
    batches = make_batches(config, train_images, train_labels, mesh)
    model = make_model(config)
    train_step = classification.make_train_step(config.label_smoothing)
    init_rng = jax.random.key(config.seed)
    input_shape = (1, *train_images.shape[1:])

    learning_rate = config.learning_rate or _suggested_learning_rate(config, workdir, mesh,
                                                                     (train_images, train_labels))
    total_steps = config.num_epochs * batches.steps_per_epoch
    state = create_train_state(model, make_tx(config, learning_rate, total_steps), init_rng, input_shape)
    evaluate = make_evaluator(classification.eval_step, test_images, test_labels, config.eval_batch_size,
                              mesh, MEAN, STD)
    train_started = time.time()
    state = trainer.train(state=state, train_step=train_step, batches=batches, num_steps=total_steps, mesh=mesh,
                          seed=config.seed, workdir=workdir, evaluate=evaluate, stop_at=stop_at,
                          checkpoint_every=config.checkpoint_every_epochs * batches.steps_per_epoch,
                          log_every=config.log_every, meta={"learning_rate": learning_rate})
    train_seconds = time.time() - train_started
    if stop_at is not None and stop_at < total_steps:
        return {}

    results = {"learning_rate": learning_rate, "steps": total_steps, "epochs": config.num_epochs,
               **evaluate(state)}
    probabilities = predict_probabilities(classification.predict, state, test_images, config.eval_batch_size,
                                          mesh, MEAN, STD)
    predictions = np.argmax(probabilities, -1)
    if config.tta:
        tta_probabilities = predict_probabilities(classification.predict, state, test_images,
                                                  config.eval_batch_size, mesh, MEAN, STD, *tta_views(config))
        results["test_accuracy_tta"] = float(np.mean(np.argmax(tta_probabilities, -1) == test_labels))
    results["train_seconds"] = train_seconds
    results["total_seconds"] = time.time() - started
    results["devices"] = f"{mesh.size} x {jax.devices()[0].device_kind}"
    if jax.process_index() == 0:
        counts = plots.confusion_matrix(test_labels, predictions, len(fashion_mnist.CLASS_NAMES))
        plots.plot_confusion_matrix(os.path.join(workdir, "confusion_matrix.png"), counts, fashion_mnist.CLASS_NAMES)
        plots.plot_top_losses(os.path.join(workdir, "top_losses.png"), test_images, probabilities, test_labels,
                              fashion_mnist.CLASS_NAMES, config.top_losses)
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    return results


def lr_find(config, workdir: str, num_seeds: int = 1, mesh=None, data=None) -> lr_finder.LRFindResult:
    """The LR range test for this experiment's model, optimizer and data; writes lr_find.png and lr_find.json.

    With num_seeds > 1 the sweep runs K initialisations and data orders in one vmapped, compiled program and
    suggests from the mean curve."""
    mesh = mesh or sharding.make_mesh(config.num_devices or None)
    train_images, train_labels = data or load_data(config)[:2]
    batches = make_batches(config, train_images, train_labels, mesh)
    model, lf = make_model(config), config.lr_find
    train_step = classification.make_train_step(config.label_smoothing)
    tx = make_tx(config, lf.start_lr, 0)
    input_shape = (1, *train_images.shape[1:])
    sweep = dict(start_lr=lf.start_lr, end_lr=lf.end_lr, num_steps=lf.num_steps)
    if num_seeds == 1:
        state = create_train_state(model, tx, jax.random.key(config.seed), input_shape)
        found = lr_finder.lr_range_test(train_step, state, batches.batch_traceable if lf.compiled else batches.batch,
                                        seed=config.seed, compiled=lf.compiled, **sweep)
    else:
        seeds = [config.seed + k for k in range(num_seeds)]
        states = jax.vmap(lambda key: create_train_state(model, tx, key, input_shape))(
            jax.vmap(jax.random.key)(jnp.asarray(seeds)))
        found = lr_finder.lr_range_test_seeds(train_step, states, batches.batch_traceable, seeds, **sweep)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        plots.lr_find(os.path.join(workdir, "lr_find.png"), found)
        with open(os.path.join(workdir, "lr_find.json"), "w") as f:
            json.dump(found.to_json(), f)
    return found


def _suggested_learning_rate(config, workdir, mesh, data) -> float:
    """The configured suggestion of the LR range test (reused from lr_find.json when resuming)."""
    path = os.path.join(workdir, "lr_find.json")
    if os.path.exists(path):
        with open(path) as f:
            suggestions = json.load(f)["suggestions"]
    else:
        suggestions = lr_find(config, workdir, mesh=mesh, data=data).suggestions
    if config.lr_find.suggestion not in suggestions:
        raise ValueError(f"config.lr_find.suggestion={config.lr_find.suggestion!r} is not one of "
                         f"{sorted(suggestions)}")
    return suggestions[config.lr_find.suggestion]
