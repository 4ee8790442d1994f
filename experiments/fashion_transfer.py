"""Transfer learning offline (lessons 1, 2 and 7): pretrain on Fashion-MNIST classes 0-4, fine-tune on 5-9.

The recipe fastai applies to an ImageNet ResNet, with Fashion-MNIST standing in for ImageNet:
  1. pretrain: the lesson-1 small ResNet (torchvision-style `fc` head) on every training image of classes 0-4
     (T-shirt, trouser, pullover, dress, coat), one 1cycle fit.
  2. head: a new fastai head (concat pooling, BN, dropout, linear) on that body, for classes 5-9 (sandal, shirt,
     sneaker, bag, ankle boot) with only n labelled training images each; the body is frozen (its BatchNorm
     layers keep their running statistics, its parameters get no update).
  3. fine-tune: everything unfrozen, discriminative learning rates (lr/9, lr/3, lr for fastai's three layer
     groups) and SGDR (restarts after cycle_steps, cycle_steps*cycle_mult, ...; a checkpoint ends each cycle).
  baseline: the same architecture (the pretraining's initial body, the same new head) trained from scratch on
     the same images for as many steps as phases 2 and 3 together (1cycle), at each rate of a small grid; the
     best rate counts (chosen on the test set, which only flatters the baseline).
Phases 2, 3 and the baseline run for each n in `labelled_per_class` (10 and 100). All models are scored on the
real test images of classes 5-9 (5000). Each phase trains in its own sub-workdir (pretrain/, n100/head/,
n100/finetune/, n100/scratch_lr0.01/, ...), so rerunning the command resumes where it stopped.

Run:
  .venv/bin/python scripts/train.py --config experiments/fashion_transfer.py --workdir runs/fashion_transfer

Measured on an idle 2-core CPU (251 s for the whole command, 114 s of it pretraining): the
pretrained body reaches 93.04% on classes 0-4; on classes 5-9 (5000 test images)
  10 labelled images per class:  fine-tuned 88.50%, from scratch 86.70% (best of the grid, lr 3e-2): +1.80 points
  100 labelled images per class: fine-tuned 92.18%, from scratch 91.72% (lr 1e-2): +0.46 points
Transfer helps, but far less than ImageNet features help on pets: a body that learnt tops, trousers and dresses
knows little about sandals, sneakers, boots and bags, and those classes are easy to learn from few images.
A better-trained body helps some: `--config.pretrain.epochs=8` (94.72% on classes 0-4, 554 s for the whole command
on a CPU shared with one other job) fine-tunes to 93.24% from 100 images per class (+1.52) and 87.84% from 10
(+1.14).

How much room there is (an idle 2-core CPU, 250 s): pretrained instead on the target classes themselves, all 30k
labelled training images of classes 5-9, the body reaches 97.20% on their test images, the ceiling of this model
and schedule. That body, with the new head and fine-tuned the same way, reaches 96.94% from 100 images per class
and 94.98% from 10, against the same scratch runs as above: +5.22 and +8.28 points. So +5 points at 100 images
per class needs a body that already knows the target classes; the 0-4 body's features do not get there.
  .venv/bin/python scripts/train.py --config experiments/fashion_transfer.py --workdir runs/transfer_oracle \
      --config.source_classes='(5,6,7,8,9)'
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


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    if preset != "cpu":
        raise InputError(f"unknown preset {preset!r} for experiments/fashion_transfer.py: use 'cpu'")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data_dir = ""  # TFDS data directory; "" = TFDS's default (~/tensorflow_datasets)
    c.num_devices = 0  # 0 = all devices on the mesh
    c.source_classes = (0, 1, 2, 3, 4)
    c.target_classes = (5, 6, 7, 8, 9)
    # Labelled training images per target class: one fine-tuning and one baseline per entry, on nested subsets
    # (the 10 are among the 100), all from the same pretrained body.
    c.labelled_per_class = (10, 100)
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
    # Phases on the few labelled images, in steps (the same for every labelled_per_class), with augmentation.
    c.small_batch_size = 25
    c.augment = ml_collections.ConfigDict(dict(flip=True, crop_padding=2))
    c.head_phase = ml_collections.ConfigDict(dict(steps=100, learning_rate=1e-2))
    c.finetune = ml_collections.ConfigDict(dict(learning_rate=1e-2, cycle_steps=20, cycle_mult=2, num_cycles=3,
                                                group_factor=3.0))  # lr/9, lr/3, lr
    c.scratch_learning_rates = (3e-3, 1e-2, 3e-2)
    return c


def split_data(config):
    """(source train, source test, {n: target train}, target test) as (images, labels) with labels 0..K-1.

    Target training sets hold n images per class for each n in `labelled_per_class`, drawn at random (seeded);
    a smaller set is part of every larger one."""
    train_images, train_labels = fashion_mnist.load("train", config.data_dir or None, config.train_examples or None)
    test_images, test_labels = fashion_mnist.load("test", config.data_dir or None, config.test_examples or None)

    def select(images, labels, classes):
        keep = np.isin(labels, classes)
        return images[keep], np.searchsorted(np.asarray(classes), labels[keep]).astype(np.int32)

    rng = np.random.default_rng(config.seed)
    orders = [rng.permutation(np.flatnonzero(train_labels == k)) for k in config.target_classes]
    targets = {}
    for n in config.labelled_per_class:
        if any(len(order) < n for order in orders):
            raise InputError(f"labelled_per_class={n}: a target class has only {min(map(len, orders))} training images")
        picked = rng.permutation(np.concatenate([order[:n] for order in orders]))
        targets[n] = select(train_images[picked], train_labels[picked], config.target_classes)
    return (select(train_images, train_labels, config.source_classes),
            select(test_images, test_labels, config.source_classes), targets,
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


def pretrain(config, source_train, evaluate_source, mesh, workdir: str):
    """Phase 1: the body with a torchvision-style `fc` head on the source classes, 1cycle.

    Returns (trained variables, the initial variables it started from, source test accuracy)."""
    p = config.pretrain
    batches = InMemoryImages(*source_train, p.batch_size, mesh, config.seed, MEAN, STD,
                             functools.partial(augment.augment, flip=p.flip, crop_padding=p.crop_padding))
    steps = p.epochs * batches.steps_per_epoch
    model = lesson1.make_model(config, len(config.source_classes))
    state = create_train_state(model, _optimizer(config, *_one_cycle(steps, p.learning_rate)),
                               jax.random.key(config.seed, impl="rbg"), (1, *source_train[0].shape[1:]))
    initial = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})  # before donation
    state = _train(config, state, batches, steps, mesh, os.path.join(workdir, "pretrain"), evaluate_source,
                   p.label_smoothing)
    accuracy = evaluate_source(state)["test_accuracy"]
    return {"params": state.params, "batch_stats": state.batch_stats}, initial, accuracy


def transfer_and_baseline(config, body: dict, body_init: dict, target_train, evaluate_target, mesh,
                          workdir: str) -> dict:
    """Phases 2 (new head, frozen body) and 3 (unfreeze: discriminative rates, SGDR), and the baseline from
    scratch at each rate of the grid, on one labelled set; returns their test accuracies and the gap."""
    model = make_transfer_model(config, len(config.target_classes))
    groups = model.layer_groups()
    input_shape = (1, *target_train[0].shape[1:])
    augment_fn = functools.partial(augment.augment, flip=config.augment.flip,
                                   crop_padding=config.augment.crop_padding)
    batches = InMemoryImages(*target_train, config.small_batch_size, mesh, config.seed, MEAN, STD, augment_fn)
    # Both arms start from the same new head; the baseline's body is the pretraining's own initialisation.
    # (Host arrays: the trainer donates its state, and `initial` is used more than once.)
    head_init = resnet.init_head(model, jax.random.key(config.seed + 1, impl="rbg"))
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                            np.zeros(input_shape, np.float32))
    initial = pretrained.load_into(shapes, {
        c: {**{k: v for k, v in body_init[c].items() if k != "fc"}, "head": head_init[c]} for c in shapes},
        source="the initial body and new head")
    variables = pretrained.load_into(initial, body, pretrained.HEAD_VARIABLES, source="the pretrained body")
    results, seconds = {}, {}

    started = time.time()
    h = config.head_phase
    state = TrainState.create(apply_fn=model.clone(frozen_groups=2).apply, params=variables["params"],
                              batch_stats=variables["batch_stats"],
                              tx=_optimizer(config, *_one_cycle(h.steps, h.learning_rate), frozen=groups[:2]))
    state = _train(config, state, batches, h.steps, mesh, os.path.join(workdir, "head"), evaluate_target,
                   checkpoint_every=h.steps)
    results["head_test_accuracy"] = evaluate_target(state)["test_accuracy"]
    seconds["head"] = time.time() - started

    started = time.time()
    f = config.finetune
    cycle_ends = [int(end) for end in np.cumsum([f.cycle_steps * f.cycle_mult ** i for i in range(f.num_cycles)])]
    tx = _optimizer(config, schedules.sgdr(f.learning_rate, f.cycle_steps, f.cycle_mult, f.num_cycles),
                    lr_multipliers=optimizers.discriminative_multipliers(groups, f.group_factor))
    state = TrainState.create(apply_fn=model.apply, params=state.params, batch_stats=state.batch_stats, tx=tx)
    state = _train(config, state, batches, cycle_ends[-1], mesh, os.path.join(workdir, "finetune"),
                   evaluate_target, checkpoint_every=cycle_ends[-1], checkpoint_steps=cycle_ends)
    results["finetuned_test_accuracy"] = evaluate_target(state)["test_accuracy"]
    seconds["finetune"] = time.time() - started

    started = time.time()
    steps = h.steps + cycle_ends[-1]  # as many steps as phases 2 and 3 together
    scratch = {}
    for lr in config.scratch_learning_rates:
        state = TrainState.create(apply_fn=model.apply, params=initial["params"], batch_stats=initial["batch_stats"],
                                  tx=_optimizer(config, *_one_cycle(steps, lr)))
        state = _train(config, state, batches, steps, mesh, os.path.join(workdir, f"scratch_lr{lr:g}"),
                       evaluate_target, checkpoint_every=steps)
        scratch[f"{lr:g}"] = evaluate_target(state)["test_accuracy"]
    seconds["scratch"] = time.time() - started
    best_lr = max(scratch, key=scratch.get)
    return {**results, "scratch_test_accuracy": scratch[best_lr], "scratch_best_learning_rate": float(best_lr),
            "scratch_test_accuracy_by_learning_rate": scratch, "scratch_steps": steps,
            "gap_points": 100 * (results["finetuned_test_accuracy"] - scratch[best_lr]),
            "labelled_images": len(target_train[1]), "seconds": seconds}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Pretrains once, then fine-tunes and trains the baseline for each labelled set; writes results.json with
    every accuracy and gap (results["n100"]["gap_points"], ...)."""
    started = time.time()
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(config.num_devices or None)
    source_train, source_test, targets, target_test = split_data(config)
    evaluate_source = _evaluator(config, source_test, mesh)
    evaluate_target = _evaluator(config, target_test, mesh)
    body, body_init, accuracy = pretrain(config, source_train, evaluate_source, mesh, workdir)
    results = {"pretrain_source_test_accuracy": accuracy, "pretrain_seconds": time.time() - started}
    for n, target_train in targets.items():
        results[f"n{n}"] = transfer_and_baseline(config, body, body_init, target_train, evaluate_target, mesh,
                                                 os.path.join(workdir, f"n{n}"))
    results.update({"test_images": len(target_test[1]), "total_seconds": time.time() - started,
                    "devices": f"{mesh.size} x {jax.devices()[0].device_kind}"})
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    return results
