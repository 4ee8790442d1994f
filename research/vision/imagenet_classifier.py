"""Fine-tuning an ImageNet ResNet on an image classification dataset, as lesson 1 (2018) ran it on the
Oxford-IIIT Pets and dogs vs cats (experiments/pets.py): fastai's head on a frozen pretrained body, then
unfreezing with discriminative rates and SGDR (research/vision/imagenet_finetune.py); the test split scored
once, plain and with test-time augmentation."""

import functools
import os

import jax
import ml_collections
import numpy as np

from research.core import classification, experiment, sharding
from research.core.train_state import TrainState
from research.vision import (architectures, classifier, image_sources, imagenet_finetune, pipeline, pretrained,
                             resnet)
from research.vision.image_arrays import image_batches


def make_model(config, num_classes: int, frozen_groups: int = 0) -> resnet.ResNet:
    """`config.arch` (an ImageNet ResNet, research/vision/architectures.py) with fastai's head (`config.head`)."""
    sizes = dict(stage_sizes=tuple(config.stage_sizes)) if config.stage_sizes else {}
    if config.stage_widths:
        sizes["stage_widths"], sizes["stem_width"] = tuple(config.stage_widths), config.stage_widths[0]
    return architectures.imagenet_resnet(config.arch, num_classes, head=architectures.fastai_head(config.head),
                                         frozen_groups=frozen_groups, **sizes)


def initial_variables(config, model, input_shape) -> dict:
    """The pretrained body (config.weights) with a new head, as host arrays."""
    if not config.weights:  # random weights, for tests: a full (jitted) initialisation
        init = jax.jit(functools.partial(model.init, train=False))
        return jax.device_get(init(jax.random.key(config.seed, impl="rbg"), np.zeros(input_shape, np.float32)))
    head = resnet.init_head(model, jax.random.key(config.seed, impl="rbg"))
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                            np.zeros(input_shape, np.float32))
    path = imagenet_finetune.weights_path(config.weights)
    body = pretrained.load_torchvision_resnet(path, shapes, skip_head=True)
    return {c: {**{k: v for k, v in body[c].items() if k != "head"}, "head": head[c]} for c in body}


def load_data(config) -> image_sources.ImageData:
    """The TFDS images with ImageNet's normalisation (what the pretrained body expects), RGB."""
    data = image_sources.load_image_data(config.data, config.data_dir)
    return data._replace(mean=np.asarray(pretrained.IMAGENET_MEAN), std=np.asarray(pretrained.IMAGENET_STD))


def setup(config, mesh) -> experiment.Setup:
    """The head phase (frozen body): what scripts/lr_find.py sweeps."""
    return setup_on(config, mesh, load_data(config))


def setup_on(config, mesh, data: image_sources.ImageData) -> experiment.Setup:
    """`setup` on already loaded data."""
    model = make_model(config, len(data.class_names))
    input_shape = (1, *data.train.images.shape[1:])
    groups = model.layer_groups()

    def create_state(tx, rng):
        del rng  # the pretrained body and the head's seed fix the initial variables
        variables = initial_variables(config, model, input_shape)
        frozen = make_model(config, len(data.class_names), frozen_groups=2)
        return TrainState.create(apply_fn=frozen.apply, params=variables["params"],
                                 batch_stats=variables["batch_stats"], tx=tx)

    return experiment.Setup(
        create_state=create_state,
        make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps,
                                                                            frozen=groups[:2]),
        train_step=classification.make_train_step(config.label_smoothing), eval_step=classification.eval_step,
        batches=image_batches(data.train.images, data.train.labels, config.batch_size, mesh, config.seed, data.mean,
                              data.std, pipeline.augment_fn(config.augment)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Head on the frozen body, then unfreeze (research/vision/imagenet_finetune.py); scores the test split once,
    plain and with TTA; writes results.json. Each phase resumes from its sub-workdir."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        data = load_data(config)
    pipeline.save_preprocessing(workdir, config.data.image_size, 3, data.mean, data.std, data.class_names)
    run = setup_on(config, mesh, data)
    evaluate = classifier.valid_evaluator(config, data, mesh)
    model = make_model(config, len(data.class_names))
    variables = initial_variables(config, model, (1, *data.train.images.shape[1:]))
    with timer("train"):
        state, head = imagenet_finetune.fine_tune(config, workdir, model, variables, run, mesh, evaluate)
    metrics = {**{"head_" + k: v for k, v in head.items()}, **evaluate(state)}
    metrics.update(classifier.score_test(config, state, data, mesh))
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, classes=len(data.class_names),
                                    train_images=len(data.train.labels))


def predict(config, workdir: str, input_path: str) -> list[dict]:
    """Predictions for new image files with the fine-tuned model (the last SGDR cycle's checkpoint): a row per
    file with its predicted class, probability and the top 3 (research/vision/pipeline.py)."""
    state_for = lambda saved: pipeline.restore_for_prediction(
        os.path.join(workdir, "finetune"), make_model(config, len(saved["class_names"])), saved)
    return pipeline.predict_image_files(workdir, input_path, state_for, classification.predict)
