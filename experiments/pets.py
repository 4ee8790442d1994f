"""Lesson 1 (2018) as the course ran it: an ImageNet ResNet-34 fine-tuned on the Oxford-IIIT Pets (37 breeds).

  1. head: torchvision's ImageNet ResNet-34 body (research/pretrained.py downloads and checks it) with a new
     fastai head; the body is frozen (BatchNorm on its ImageNet statistics), the head trained with 1cycle.
  2. unfreeze: every layer group trains, at discriminative rates (lr/9, lr/3, lr), with SGDR restarts
     (cycle_len, cycle_mult) and a checkpoint at the end of each cycle.
Test accuracy on the TFDS test split, plain and with test-time augmentation (flips and zooms).

Needs a network (the TFDS dataset and the weights) and an accelerator: run it on a cloud machine.
  .venv/bin/python scripts/train.py --config experiments/pets.py --workdir runs/pets
The course's fastai reaches about 6-7% error on this dataset with ResNet-34; not run here yet (no network on the
development machine). Its wiring is tested offline on TFDS's mock examples with a tiny random-weight ResNet.
`experiments/dogs_vs_cats.py` is the same flow on TFDS cats_vs_dogs.
"""

import functools
import json
import os
import time

import jax
import ml_collections
import numpy as np

from research import augment, classification, optimizers, pretrained, schedules, sharding, trainer
from research.data import images
from research.data.in_memory import InMemoryImages
from research.errors import InputError
from research.evaluation import make_evaluator, predict_probabilities
from research.models import resnet
from research.models.head import FastaiHead
from research.train_state import TrainState

ARCHITECTURES = {"resnet18": resnet.resnet18, "resnet34": resnet.resnet34, "resnet50": resnet.resnet50}


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    if preset != "default":
        raise InputError(f"unknown preset {preset!r} for experiments/pets.py: use 'default'")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data_dir = ""  # TFDS data directory; "" = TFDS's default (~/tensorflow_datasets)
    c.num_devices = 0
    c.tfds_name = "oxford_iiit_pet"
    c.train_split = "train"
    c.test_split = "test"
    c.image_size = 224
    c.arch = "resnet34"
    c.stage_sizes = ()  # () = the architecture's own; smaller for tests (random weights only)
    c.stage_widths = ()
    # A key of research.pretrained.CHECKPOINTS (downloaded into its cache), a local .pth/.safetensors path, or
    # "" for random weights (tests only).
    c.weights = "resnet34"
    c.head = ml_collections.ConfigDict(dict(hidden=(512,), dropout=0.5))
    c.optimizer = ml_collections.ConfigDict(dict(name="adamw", weight_decay=0.01, b2=0.99))
    c.label_smoothing = 0.0
    c.batch_size = 64
    c.eval_batch_size = 64
    c.augment = ml_collections.ConfigDict(dict(flip=True, max_zoom=1.1, max_degrees=10.0, brightness=0.2,
                                               contrast=0.2))
    c.head_phase = ml_collections.ConfigDict(dict(epochs=4, learning_rate=3e-3))
    c.finetune = ml_collections.ConfigDict(dict(learning_rate=3e-4, cycle_len=1, cycle_mult=2, num_cycles=2,
                                                group_factor=3.0))
    c.tta = True
    c.log_every = 50
    return c


def load_images(config):
    train = images.load_tfds_images(config.tfds_name, config.train_split, config.image_size, config.data_dir or None,
                                    channels=3)
    test = images.load_tfds_images(config.tfds_name, config.test_split, config.image_size, config.data_dir or None,
                                   channels=3)
    return train, test


def make_model(config, num_classes: int, frozen_groups: int = 0):
    if config.arch not in ARCHITECTURES:
        raise InputError(f"config.arch={config.arch!r} is not one of {sorted(ARCHITECTURES)}")
    head = functools.partial(FastaiHead, hidden=tuple(config.head.hidden), dropout=config.head.dropout)
    sizes = dict(stage_sizes=tuple(config.stage_sizes)) if config.stage_sizes else {}
    if config.stage_widths:
        sizes["stage_widths"], sizes["stem_width"] = tuple(config.stage_widths), config.stage_widths[0]
    return ARCHITECTURES[config.arch](num_classes=num_classes, head=head, frozen_groups=frozen_groups, **sizes)


def initial_variables(config, model, input_shape) -> dict:
    """The pretrained body (config.weights) with a new head, as host arrays."""
    if not config.weights:  # random weights, for tests: a full (jitted) initialisation
        init = jax.jit(functools.partial(model.init, train=False))
        return jax.device_get(init(jax.random.key(config.seed, impl="rbg"), np.zeros(input_shape, np.float32)))
    head = resnet.init_head(model, jax.random.key(config.seed, impl="rbg"))
    path = pretrained.download(config.weights) if config.weights in pretrained.CHECKPOINTS else config.weights
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                            np.zeros(input_shape, np.float32))
    body = pretrained.load_torchvision_resnet(path, shapes, skip_head=True)
    return {c: {**{k: v for k, v in body[c].items() if k != "head"}, "head": head[c]} for c in body}


def _optimizer(config, learning_rate, momentum=0.9, **groups):
    o = config.optimizer
    return optimizers.make_optimizer(o.name, learning_rate, momentum, o.weight_decay, b2=o.b2, **groups)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Head on the frozen body, then unfreeze; writes results.json. Each phase resumes from its sub-workdir."""
    started = time.time()
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(config.num_devices or None)
    train, test = load_images(config)
    num_classes = len(train.class_names)
    mean, std = np.asarray(pretrained.IMAGENET_MEAN), np.asarray(pretrained.IMAGENET_STD)
    a = config.augment
    augment_fn = functools.partial(augment.augment, flip=a.flip, max_zoom=a.max_zoom, max_degrees=a.max_degrees,
                                   brightness=a.brightness, contrast=a.contrast)
    batches = InMemoryImages(train.images, train.labels, config.batch_size, mesh, config.seed, mean, std, augment_fn)
    evaluate = make_evaluator(classification.eval_step, test.images, test.labels, config.eval_batch_size, mesh,
                              mean, std)
    model = make_model(config, num_classes)
    groups = model.layer_groups()
    variables = initial_variables(config, model, (1, *train.images.shape[1:]))
    train_step = classification.make_train_step(config.label_smoothing)
    run = functools.partial(trainer.train, train_step=train_step, batches=batches, mesh=mesh, seed=config.seed,
                            evaluate=evaluate, log_every=config.log_every)

    h = config.head_phase
    steps = h.epochs * batches.steps_per_epoch
    tx = _optimizer(config, schedules.one_cycle(steps, h.learning_rate), schedules.one_cycle_momentum(steps),
                    frozen=groups[:2])
    state = TrainState.create(apply_fn=make_model(config, num_classes, frozen_groups=2).apply,
                              params=variables["params"], batch_stats=variables["batch_stats"], tx=tx)
    state = run(state=state, num_steps=steps, workdir=os.path.join(workdir, "head"))
    results = {"head_" + k: v for k, v in evaluate(state).items()}

    f = config.finetune
    cycle_steps = f.cycle_len * batches.steps_per_epoch
    cycle_ends = list(np.cumsum([cycle_steps * f.cycle_mult ** i for i in range(f.num_cycles)]))
    tx = _optimizer(config, schedules.sgdr(f.learning_rate, cycle_steps, f.cycle_mult, f.num_cycles),
                    lr_multipliers=optimizers.discriminative_multipliers(groups, f.group_factor))
    state = TrainState.create(apply_fn=model.apply, params=state.params, batch_stats=state.batch_stats, tx=tx)
    state = run(state=state, num_steps=cycle_ends[-1], workdir=os.path.join(workdir, "finetune"),
                checkpoint_every=cycle_ends[-1], checkpoint_steps=cycle_ends)
    results.update(evaluate(state))
    if config.tta:
        views = functools.partial(augment.tta_views, flip=a.flip, zoom=a.max_zoom)
        probabilities = predict_probabilities(classification.predict, state, test.images, config.eval_batch_size,
                                              mesh, mean, std, views)
        results["test_accuracy_tta"] = float(np.mean(np.argmax(probabilities, -1) == test.labels))
    results.update({"classes": num_classes, "train_images": len(train.labels), "test_images": len(test.labels),
                    "total_seconds": time.time() - started,
                    "devices": f"{mesh.size} x {jax.devices()[0].device_kind}"})
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as file:
            json.dump(results, file, indent=2)
    return results
