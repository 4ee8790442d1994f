"""The segmentation recipe (lesson 7), written once for experiments/segmentation.py's presets: masks from the
config's source, a U-Net on the config's ResNet encoder, trained from scratch (LR range test, 1cycle, the best
checkpoint by validation mean IoU) or fine-tuned from a pretrained encoder (research/vision/imagenet_finetune.py),
then scored exactly over validation and test, with flip TTA when `config.tta`, and the best and worst test
examples drawn (examples.png)."""

import os

import jax
import numpy as np

from research.core import evaluation, experiment, inference
from research.core.arrays import ArrayBatches
from research.core.errors import InputError
from research.core.train_state import TrainState
from research.vision import (architectures, augment_joint, canvases, imagenet_finetune, masks, pretrained,
                             segmentation, segmentation_plots, unet)
from research.vision.image_arrays import image_prepare

LOSSES = {"cross_entropy": segmentation.pixel_cross_entropy, "dice": segmentation.soft_dice_loss,
          "cross_entropy_and_dice": segmentation.cross_entropy_and_dice}


# --- data ----------------------------------------------------------------------------------------------------

def load_data(config) -> masks.MaskData:
    """`config.data.source`: the Fashion-MNIST canvases, a folder of images and masks, or a TFDS dataset with
    trimaps (pets); `config.data.train_examples` > 0 keeps the first N training examples."""
    d = config.data
    if d.source == "canvases":
        load = lambda split: masks.MaskSet(*canvases.load(split, config.data_dir or None, d.canvases), ())
        train, valid, test = load("train"), load("validation"), load("test")
        mean, std = np.asarray([train.images.mean() / 255]), np.asarray([train.images.std() / 255])
        data = masks.MaskData(train, valid, test, canvases.CLASS_NAMES, None, mean, std)
    elif d.source == "folder":
        data = masks.load_mask_folder(d.path, d.image_size, d.valid_fraction)
    elif d.source == "tfds":
        load = lambda split, limit=0: masks.load_tfds_masks(d.tfds_name, split, d.image_size, config.data_dir or None,
                                                           values=masks.PETS_TRIMAP, limit=limit)
        train, valid = masks.hold_out(load(d.train_split, d.train_examples), d.valid_fraction)
        # A pretrained encoder expects ImageNet's normalisation.
        data = masks.MaskData(train, valid, load(d.test_split) if d.test_split else None,
                              masks.PETS_CLASSES, None, np.asarray(pretrained.IMAGENET_MEAN),
                              np.asarray(pretrained.IMAGENET_STD))
    else:
        raise InputError(f"config.data.source={d.source!r} is not one of canvases, folder, tfds")
    if d.train_examples and d.source != "tfds":
        n = d.train_examples
        data = data._replace(train=masks.MaskSet(data.train.images[:n], data.train.masks[:n], data.train.sources[:n]))
    return data


def arrays(split: masks.MaskSet) -> dict[str, np.ndarray]:
    return {"image": split.images, "pixel_labels": split.masks}


def input_shape(data: masks.MaskData) -> tuple[int, ...]:
    """A one-image batch of the training images' shape (for initialisation)."""
    return (1, *data.train.images.shape[1:])


# --- model ---------------------------------------------------------------------------------------------------

def make_model(config, num_classes: int, frozen_groups: int = 0) -> unet.UNet:
    """A U-Net on the encoder of `config.model.arch` (research/vision/architectures.py)."""
    m = config.model
    body = architectures.by_name(m, 1)
    return unet.UNet(unet.encoder_of(body), num_classes, upsample=m.upsample, final_width=m.final_width or None,
                     frozen_groups=frozen_groups)


def initial_variables(config, model: unet.UNet, shape: tuple[int, ...]) -> dict:
    """Random variables, with the encoder from `config.weights` when given (host arrays)."""
    variables = unet.init_variables(model, jax.random.key(config.seed, impl="rbg"), shape)
    if not config.weights:
        return variables
    return unet.load_torchvision_encoder(variables, imagenet_finetune.weights_path(config.weights))


# --- training ------------------------------------------------------------------------------------------------

def setup_on(config, mesh, data: masks.MaskData) -> experiment.Setup:
    """From scratch: the 1cycle fit. With `config.weights`: the first phase (encoder frozen). What
    scripts/lr_find.py sweeps."""
    num_classes = len(data.class_names)
    frozen = 2 if config.weights else 0
    model = make_model(config, num_classes, frozen)
    groups = model.layer_groups()[:frozen]

    def create_state(tx, rng):
        if config.weights:
            variables = initial_variables(config, model, input_shape(data))
        else:
            variables = unet.init_variables(model, rng, input_shape(data))
        return TrainState.create(apply_fn=model.apply, params=variables["params"],
                                 batch_stats=variables["batch_stats"], tx=tx)

    return experiment.Setup(
        create_state=create_state,
        make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps,
                                                                            frozen=groups),
        train_step=segmentation.make_train_step(LOSSES[config.loss]),
        eval_step=segmentation.make_eval_step(flip_tta=config.tta),
        batches=ArrayBatches(arrays(data.train), config.batch_size, mesh, config.seed,
                             augment_joint.transform(data.mean, data.std, config.augment)))


def evaluator(config, split: masks.MaskSet, data: masks.MaskData, mesh, prefix: str = "valid_"):
    """`evaluate(state) -> metrics` over `split`, summed exactly (on the flip-averaged probabilities with
    `config.tta`)."""
    return evaluation.make_evaluator(segmentation.make_eval_step(flip_tta=config.tta), arrays(split),
                                     config.eval_batch_size, mesh, image_prepare(data.mean, data.std), prefix=prefix,
                                     finish=segmentation.finish)


def train(config, workdir: str, run: experiment.Setup, data: masks.MaskData, mesh, evaluate,
          timer: experiment.Timer) -> tuple[TrainState, dict]:
    """From scratch: the range test's rate (or `config.learning_rate`), 1cycle, then the best checkpoint by
    `config.checkpoint.best_metric`. With `config.weights`: fine-tuned in two phases. Returns the trained
    state and what results.json records of the training (the rate, or the head phase's metrics)."""
    if config.weights:
        with timer("train"):
            model = make_model(config, len(data.class_names))
            variables = initial_variables(config, model, input_shape(data))
            state, head = imagenet_finetune.fine_tune(config, workdir, model, variables, run, mesh, evaluate)
        return state, {"head_phase": head}
    with timer("lr_find"):
        learning_rate = experiment.learning_rate(config, workdir, run)
    with timer("train"):
        state = experiment.fit(config, workdir, run, learning_rate, mesh, evaluate)
    state = inference.restore_trained(workdir, state, config.checkpoint.best_metric, config.checkpoint.best_mode)
    return state, {"learning_rate": learning_rate}


# --- scoring -------------------------------------------------------------------------------------------------

def score(config, workdir: str, state, data: masks.MaskData, mesh, evaluate) -> dict[str, float]:
    """Validation metrics (`evaluate`), and the test set's, scored once, with examples.png of its best and
    worst examples."""
    metrics = evaluate(state)
    if data.test is not None:
        metrics.update(evaluator(config, data.test, data, mesh, prefix="test_")(state))
        if jax.process_index() == 0 and config.examples_shown:
            test = data.test
            predicted = segmentation.predicted_masks(state, test.images, data.mean, data.std, config.eval_batch_size,
                                                     mesh, config.tta)
            segmentation_plots.plot_best_and_worst(os.path.join(workdir, "examples.png"), test.images, test.masks,
                                                   predicted, data.class_names, data.colours, config.examples_shown)
    return metrics


def write_results(workdir: str, config, metrics: dict, data: masks.MaskData, timer: experiment.Timer, mesh,
                  **extra) -> dict:
    """results.json with each class's IoU by name and the number of training examples besides the metrics."""
    named = lambda prefix: {name: metrics.get(f"{prefix}iou_{k}") for k, name in enumerate(data.class_names)}
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, class_names=list(data.class_names),
                                    iou_per_class={"valid": named("valid_"), "test": named("test_")},
                                    train_examples=len(data.train.images), **extra)
