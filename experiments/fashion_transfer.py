"""Transfer learning offline (lessons 1, 2 and 7): pretrain on Fashion-MNIST classes 0-4, fine-tune on 5-9.

The recipe fastai applies to an ImageNet ResNet, with Fashion-MNIST standing in for ImageNet:
  1. pretrain: the lesson-1 small ResNet (torchvision-style `fc` head) on every training image of classes 0-4
     (T-shirt, trouser, pullover, dress, coat), one 1cycle fit.
  2. head: a new fastai head (concat pooling, BN, dropout, linear) on that body, for classes 5-9 (sandal, shirt,
     sneaker, bag, ankle boot) with only `labelled_per_class` training images each; the body is frozen (its
     BatchNorm layers keep their running statistics, its parameters get no update).
  3. fine-tune: everything unfrozen, discriminative learning rates (lr/9, lr/3, lr for fastai's three layer
     groups) and SGDR (restarts after cycle_len, cycle_len*cycle_mult, ... epochs; a checkpoint ends each cycle).
  baseline: the same architecture (body + head, from the same initialisation as the new head) trained from
     scratch on the same images for as many epochs as phases 2 and 3 together (1cycle), at each rate of a small
     grid; the best rate counts (chosen on the test set, which only flatters the baseline).
All models are scored on the real test images of classes 5-9 (5000). Each phase trains in its own sub-workdir
(pretrain/, head/, finetune/, scratch_lr*/), so rerunning the command resumes where it stopped.

Run:
  .venv/bin/python scripts/train.py --config experiments/fashion_transfer.py --workdir runs/fashion_transfer

Reaches (2-core CPU, 100 images per class): fine-tuned 87.34% vs 78.70% from scratch (best of the grid),
a gap of 8.64 points, in 4.2 minutes for the whole command.
"""

import functools
import json
import os
import time

import jax
import ml_collections
import numpy as np

from experiments import fashion_mnist as lesson1
from research import augment, classification, optimizers, pretrained, schedules, sharding, trainer
from research.data import fashion_mnist
from research.data.in_memory import InMemoryImages
from research.errors import InputError
from research.evaluation import make_evaluator
from research.models import resnet
from research.models.head import FastaiHead
from research.train_state import TrainState, create_train_state

MEAN, STD = lesson1.MEAN, lesson1.STD
HEAD = ("^[a-z_]+/(fc|head)/",)  # variables of the classifier, in load_into's names ("params/fc/kernel")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    if preset != "cpu":
        raise InputError(f"unknown preset {preset!r} for experiments/fashion_transfer.py: use 'cpu'")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data_dir = ""  # TFDS data directory; "" = TFDS's default (~/tensorflow_datasets)
    c.num_devices = 0  # 0 = all devices on the mesh
    c.source_classes = (0, 1, 2, 3, 4)
    c.target_classes = (5, 6, 7, 8, 9)
    c.labelled_per_class = 100  # labelled training images per target class
    c.train_examples = 0  # > 0 reads the first N training images only (quick runs, tests)
    c.test_examples = 0  # > 0 reads the first N test images only
    c.model = ml_collections.ConfigDict(lesson1.get_config().model.to_dict())
    c.head = ml_collections.ConfigDict(dict(hidden=(512,), dropout=0.5))
    c.optimizer = ml_collections.ConfigDict(dict(name="adamw", weight_decay=0.01, b2=0.99))
    c.label_smoothing = 0.1
    c.eval_batch_size = 1000
    c.log_every = 50
    # Label smoothing is left out of pretraining: it makes the body's features less transferable (Kornblith et
    # al., 2021, "Why do better loss functions lead to less transferable features?").
    c.pretrain = ml_collections.ConfigDict(dict(epochs=3, batch_size=128, learning_rate=1e-2, label_smoothing=0.0,
                                                flip=True, crop_padding=2))
    # Phases on the few labelled images: batch size, and the augmentation of their training batches.
    c.small_batch_size = 50
    c.augment = ml_collections.ConfigDict(dict(flip=True, crop_padding=2))
    c.head_phase = ml_collections.ConfigDict(dict(epochs=10, learning_rate=1e-2))
    c.finetune = ml_collections.ConfigDict(dict(learning_rate=3e-3, cycle_len=2, cycle_mult=2, num_cycles=3,
                                                group_factor=3.0))  # lr/9, lr/3, lr
    c.scratch_learning_rates = (1e-3, 3e-3, 1e-2, 3e-2)
    return c


def split_data(config):
    """(source train, source test, target train, target test) as (images, labels) with labels 0..K-1.

    The target's training images are `labelled_per_class` drawn at random (seeded) from each target class."""
    train_images, train_labels = fashion_mnist.load("train", config.data_dir or None, config.train_examples or None)
    test_images, test_labels = fashion_mnist.load("test", config.data_dir or None, config.test_examples or None)

    def select(images, labels, classes):
        keep = np.isin(labels, classes)
        return images[keep], np.searchsorted(np.asarray(classes), labels[keep]).astype(np.int32)

    rng = np.random.default_rng(config.seed)
    picked = np.concatenate([rng.choice(np.flatnonzero(train_labels == k), config.labelled_per_class, replace=False)
                             for k in config.target_classes])
    picked = rng.permutation(picked)
    return (select(train_images, train_labels, config.source_classes),
            select(test_images, test_labels, config.source_classes),
            select(train_images[picked], train_labels[picked], config.target_classes),
            select(test_images, test_labels, config.target_classes))


def make_transfer_model(config, num_classes: int):
    """The lesson-1 small ResNet body with fastai's head."""
    head = functools.partial(FastaiHead, hidden=tuple(config.head.hidden), dropout=config.head.dropout)
    return lesson1.make_model(config, num_classes).clone(head=head)


def _optimizer(config, learning_rate, momentum=0.9, **groups):
    o = config.optimizer
    return optimizers.make_optimizer(o.name, learning_rate, momentum, o.weight_decay, b2=o.b2, **groups)


def _one_cycle(total_steps: int, max_lr: float):
    return schedules.one_cycle(total_steps, max_lr), schedules.one_cycle_momentum(total_steps)


def _evaluator(config, data, mesh):
    """evaluate(state) on (images, labels); the state is stripped to its model first, so that states that differ
    only in their optimizer share one compiled evaluation."""
    evaluate = make_evaluator(classification.eval_step, *data, config.eval_batch_size, mesh, MEAN, STD)
    return lambda state: evaluate(state.replace(tx=None, opt_state=None))


def _train(config, state, batches, num_steps, mesh, workdir, evaluate, label_smoothing=None, **kwargs):
    label_smoothing = config.label_smoothing if label_smoothing is None else label_smoothing
    return trainer.train(state=state, train_step=classification.make_train_step(label_smoothing),
                         batches=batches, num_steps=num_steps, mesh=mesh, seed=config.seed, workdir=workdir,
                         evaluate=evaluate, log_every=config.log_every, **kwargs)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs the three phases and the baseline; writes results.json (accuracies and the gap) into `workdir`."""
    started = time.time()
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(config.num_devices or None)
    source_train, source_test, target_train, target_test = split_data(config)
    num_source, num_target = len(config.source_classes), len(config.target_classes)
    input_shape = (1, *target_train[0].shape[1:])
    evaluate_source = _evaluator(config, source_test, mesh)
    evaluate_target = _evaluator(config, target_test, mesh)
    augment_fn = functools.partial(augment.augment, flip=config.augment.flip,
                                   crop_padding=config.augment.crop_padding)
    small_batches = InMemoryImages(*target_train, config.small_batch_size, mesh, config.seed, MEAN, STD, augment_fn)
    steps_per_epoch = small_batches.steps_per_epoch
    results, seconds = {}, {}

    # 1. Pretrain on the source classes (stands in for ImageNet).
    phase_started = time.time()
    p = config.pretrain
    batches = InMemoryImages(*source_train, p.batch_size, mesh, config.seed, MEAN, STD,
                             functools.partial(augment.augment, flip=p.flip, crop_padding=p.crop_padding))
    steps = p.epochs * batches.steps_per_epoch
    body_model = lesson1.make_model(config, num_source)
    state = create_train_state(body_model, _optimizer(config, *_one_cycle(steps, p.learning_rate)),
                               jax.random.key(config.seed, impl="rbg"), input_shape)  # rbg: quicker to compile
    body_init = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})  # for the baseline
    state = _train(config, state, batches, steps, mesh, os.path.join(workdir, "pretrain"), evaluate_source,
                   p.label_smoothing)
    results["pretrain_source_test_accuracy"] = evaluate_source(state)["test_accuracy"]
    seconds["pretrain"] = time.time() - phase_started

    # 2. A new head for the target classes on the frozen body.
    phase_started = time.time()
    model = make_transfer_model(config, num_target)
    groups = model.layer_groups()
    # Both arms start from the same new head; the baseline's body is the pretraining's own initialisation.
    # (Host arrays: the trainer donates its state, and `initial` is used twice.)
    head_init = resnet.init_head(model, jax.random.key(config.seed + 1, impl="rbg"))
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                            np.zeros(input_shape, np.float32))
    initial = pretrained.load_into(shapes, {
        c: {**{k: v for k, v in body_init[c].items() if k != "fc"}, "head": head_init[c]} for c in shapes},
        source="the initial body and new head")
    variables = pretrained.load_into(initial, {"params": state.params, "batch_stats": state.batch_stats}, HEAD,
                                     source="the pretrained body")
    h = config.head_phase
    steps = h.epochs * steps_per_epoch
    state = TrainState.create(apply_fn=model.clone(frozen_groups=2).apply, params=variables["params"],
                              batch_stats=variables["batch_stats"],
                              tx=_optimizer(config, *_one_cycle(steps, h.learning_rate), frozen=groups[:2]))
    state = _train(config, state, small_batches, steps, mesh, os.path.join(workdir, "head"), evaluate_target,
                   checkpoint_every=steps)
    results["head_test_accuracy"] = evaluate_target(state)["test_accuracy"]
    seconds["head"] = time.time() - phase_started

    # 3. Unfreeze: discriminative learning rates and SGDR, a checkpoint at the end of each cycle.
    phase_started = time.time()
    f = config.finetune
    cycle_steps = f.cycle_len * steps_per_epoch
    lengths = [cycle_steps * f.cycle_mult ** i for i in range(f.num_cycles)]
    cycle_ends = list(np.cumsum(lengths))
    tx = _optimizer(config, schedules.sgdr(f.learning_rate, cycle_steps, f.cycle_mult, f.num_cycles),
                    lr_multipliers=optimizers.discriminative_multipliers(groups, f.group_factor))
    state = TrainState.create(apply_fn=model.apply, params=state.params, batch_stats=state.batch_stats, tx=tx)
    state = _train(config, state, small_batches, cycle_ends[-1], mesh, os.path.join(workdir, "finetune"),
                   evaluate_target, checkpoint_every=cycle_ends[-1], checkpoint_steps=cycle_ends)
    results["finetuned_test_accuracy"] = evaluate_target(state)["test_accuracy"]
    seconds["finetune"] = time.time() - phase_started

    # Baseline: the same model from scratch on the same images, as many epochs as phases 2 and 3.
    phase_started = time.time()
    epochs = h.epochs + sum(lengths) // steps_per_epoch
    steps = epochs * steps_per_epoch
    scratch = {}
    for lr in config.scratch_learning_rates:
        state = TrainState.create(apply_fn=model.apply, params=initial["params"],
                                  batch_stats=initial["batch_stats"], tx=_optimizer(config, *_one_cycle(steps, lr)))
        state = _train(config, state, small_batches, steps, mesh, os.path.join(workdir, f"scratch_lr{lr:g}"),
                       evaluate_target, checkpoint_every=steps)
        scratch[f"{lr:g}"] = evaluate_target(state)["test_accuracy"]
    seconds["scratch"] = time.time() - phase_started

    best_lr = max(scratch, key=scratch.get)
    results.update({
        "scratch_test_accuracy": scratch[best_lr], "scratch_best_learning_rate": float(best_lr),
        "scratch_test_accuracy_by_learning_rate": scratch, "scratch_epochs": epochs,
        "gap_points": 100 * (results["finetuned_test_accuracy"] - scratch[best_lr]),
        "labelled_images": len(target_train[1]), "test_images": len(target_test[1]),
        "seconds": seconds, "total_seconds": time.time() - started,
        "devices": f"{mesh.size} x {jax.devices()[0].device_kind}"})
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    return results
