"""The lesson-1 image classifier as a recipe that variants change in one place: the model and the fit's
optimizer are a `Recipe`; everything else (data, lr_find, fit, best checkpoint, test with TTA, interpretation,
prediction) is written once here.

experiments/fashion_mnist.py's recipe is `Recipe()`; a variant (experiments/fashion_mnist_sgdr.py: another
schedule; experiments/fashion_mnist_wide_head.py: another head) is a few lines: its config keys and one
function. `train_and_evaluate_seeds` trains K seeds in one vmapped program (research/core/seeds.py), what
scripts/compare.py uses.
"""

import json
import os
from typing import Callable, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from research.core import classification, configs, evaluation, experiment, inference, seeds, sharding
from research.core.train_state import create_train_state
from research.vision import architectures, image_sources, interpret, pipeline
from research.vision.image_arrays import image_batches, image_prepare


def resnet_model(config, num_classes: int) -> nn.Module:
    """The lesson-1 small ResNet (`config.model`), with torchvision's pooled linear classifier."""
    return architectures.small_resnet(config.model, num_classes, compute_dtype(config))


def compute_dtype(config) -> jnp.dtype:
    """bfloat16 with `config.mixed_precision` (activations and matmuls; the weights, their updates, BatchNorm's
    statistics and the loss stay float32), else float32."""
    return jnp.bfloat16 if config.mixed_precision else jnp.float32


def one_cycle_tx(config, peak_lr: float, total_steps: int) -> optax.GradientTransformation:
    return experiment.one_cycle_optimizer(config, peak_lr, total_steps)


class Recipe(NamedTuple):
    """What a variant of the image classifier may change.

    make_model(config, num_classes) -> a linen module `(images_BxHxWxC, train) -> logits_BxK`.
    make_tx(config, peak_lr, total_steps) -> the fit's optimizer (total_steps 0: a constant, injected rate,
        what the range test sweeps).
    """
    make_model: Callable[[ml_collections.ConfigDict, int], nn.Module] = resnet_model
    make_tx: Callable[[ml_collections.ConfigDict, float, int], optax.GradientTransformation] = one_cycle_tx

    # The experiment contract's entry points for this variant (an experiment binds them: `setup = RECIPE.setup`).
    def setup(self, config, mesh) -> experiment.Setup:
        return setup(config, mesh, self)

    def train_and_evaluate(self, config, workdir: str, stop_at: int | None = None) -> dict:
        return train_and_evaluate(config, workdir, self, stop_at)

    def train_and_evaluate_seeds(self, config, workdir: str, num_seeds: int) -> dict:
        return train_and_evaluate_seeds(config, workdir, self, num_seeds)

    def predict(self, config, workdir: str, input_path: str) -> list[dict]:
        return predict(config, workdir, input_path, self)


def get_config(preset: str, experiment_file: str) -> ml_collections.ConfigDict:
    """Lesson 1's config (presets "cpu" and "long"), the keys of experiments/fashion_mnist.py."""
    configs.check_preset(preset, ("cpu", "long"), experiment_file)
    c = configs.base()
    c.data = image_sources.data_config()
    c.model = ml_collections.ConfigDict(dict(
        stem_width=32, stem_stride=2, stage_sizes=(1, 1, 2), stage_widths=(32, 64, 128), stage_strides=(1, 2, 2)))
    c.label_smoothing = 0.1
    # bfloat16 compute with float32 master weights and BatchNorm statistics: for GPUs and TPUs (on this CPU
    # XLA's bfloat16 convolutions were not faster)
    c.mixed_precision = False
    c.augment = pipeline.augment_config(crop_padding=1, pad_mode="edge", crop_probability=0.5)
    c.tta = True
    c.tta_beta = ml_collections.config_dict.placeholder(float)
    c.checkpoint.best_metric = "valid_accuracy"
    c.top_losses = 16
    if preset == "long":
        c.num_epochs = 15
        c.augment.update(flip=True, crop_padding=2, pad_mode="constant", crop_probability=1.0)
    return c


def setup(config, mesh, recipe: Recipe) -> experiment.Setup:
    """The trainable pieces on the images `config.data` names."""
    return setup_on(config, mesh, recipe, image_sources.load_image_data(config.data, config.data_dir))


def setup_on(config, mesh, recipe: Recipe, data: image_sources.ImageData) -> experiment.Setup:
    """`setup` on already-loaded images."""
    train = data.train
    batches = image_batches(train.images, train.labels, config.batch_size, mesh, config.seed, data.mean, data.std,
                            pipeline.augment_fn(config.augment))
    model = recipe.make_model(config, len(data.class_names))
    return experiment.Setup(
        create_state=lambda tx, rng: create_train_state(model, tx, rng, (1, *train.images.shape[1:])),
        make_tx=lambda peak_lr, total_steps: recipe.make_tx(config, peak_lr, total_steps),
        train_step=classification.make_train_step(config.label_smoothing), batches=batches,
        eval_step=classification.eval_step)


def train_and_evaluate(config, workdir: str, recipe: Recipe, stop_at: int | None = None) -> dict:
    """LR range test -> fit -> best checkpoint by validation accuracy -> test accuracy (plain and TTA) ->
    interpretation plots; writes results.json, metrics, plots and checkpoints into `workdir`."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        data = image_sources.load_image_data(config.data, config.data_dir)
    _save_preprocessing(workdir, data)
    run = setup_on(config, mesh, recipe, data)
    with timer("lr_find"):
        learning_rate = experiment.learning_rate(config, workdir, run)
    evaluate_valid = valid_evaluator(config, data, mesh)
    with timer("train"):
        state = experiment.fit(config, workdir, run, learning_rate, mesh, evaluate_valid, stop_at=stop_at)
    if stop_at is not None and stop_at < config.num_epochs * run.batches.steps_per_epoch:
        return {}
    c = config.checkpoint
    state = inference.restore_trained(workdir, state, c.best_metric, c.best_mode)
    metrics = evaluate_valid(state)
    with timer("test"):
        metrics.update(score_test(config, state, data, mesh))
    valid_probabilities = _probabilities(config, state, data.valid.images, data, mesh)
    interpret.write_classification_report(workdir, state, data.valid.images, data.valid.labels, valid_probabilities,
                                          data.class_names, data.mean, data.std, config.top_losses)
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, learning_rate=learning_rate,
                                    steps=config.num_epochs * run.batches.steps_per_epoch)


def train_and_evaluate_seeds(config, workdir: str, recipe: Recipe, num_seeds: int,
                             stop_at: int | None = None) -> dict:
    """`train_and_evaluate` for seeds config.seed .. config.seed + num_seeds - 1 in ONE vmapped program: member
    k is the run `--config.seed=config.seed + k` (same initialisation, data order, augmentation, dropout).

    One learning rate for all seeds: `config.learning_rate`, else the range test's suggestion from the mean
    curve of num_seeds sweeps (itself one vmapped program). Each seed's best checkpoint is the one with the best
    mean validation accuracy over seeds (one stacked checkpoint). results.json: "metrics" holds the means over
    seeds, "per_seed" each seed's metrics; no interpretation plots."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    members = seeds.seed_range(config.seed, num_seeds)
    with timer("data"):
        data = image_sources.load_image_data(config.data, config.data_dir)
    _save_preprocessing(workdir, data)
    run = setup_on(config, mesh, recipe, data)
    with timer("lr_find"):
        learning_rate = _learning_rate_seeds(config, workdir, run, num_seeds)
    evaluate_valid = valid_evaluator(config, data, mesh)
    with timer("train"):
        states = seeds.fit(config, workdir, run, members, learning_rate, mesh,
                           seeds.evaluator(evaluate_valid, members, mesh), stop_at=stop_at)
    if stop_at is not None and stop_at < config.num_epochs * run.batches.steps_per_epoch:
        return {}
    c = config.checkpoint
    states = inference.restore_trained(workdir, states, c.best_metric, c.best_mode)
    per_seed = []
    with timer("test"):
        for k, seed in enumerate(members.seeds):
            state = seeds.placed(seeds.member(states, k), mesh)
            per_seed.append({"seed": seed, "metrics": {**evaluate_valid(state),
                                                       **score_test(config, state, data, mesh)}})
    names = per_seed[0]["metrics"]
    means = {name: float(np.mean([s["metrics"][name] for s in per_seed])) for name in names}
    return experiment.write_results(workdir, means, config, timer.total(), mesh, learning_rate=learning_rate,
                                    steps=config.num_epochs * run.batches.steps_per_epoch, per_seed=per_seed)


def _learning_rate_seeds(config, workdir: str, run: experiment.Setup, num_seeds: int) -> float:
    if config.learning_rate:
        return float(config.learning_rate)
    path = os.path.join(workdir, "lr_find.json")
    if os.path.exists(path):  # resuming: the rate the run started with
        with open(path) as f:
            return json.load(f)["suggestions"][config.lr_find.suggestion]
    return experiment.lr_find(config, workdir, run, num_seeds=num_seeds).suggestions[config.lr_find.suggestion]


def score_test(config, state, data: image_sources.ImageData, mesh) -> dict[str, float]:
    """Test loss and accuracy, and accuracy with test-time augmentation (`config.tta`); {} without a test split."""
    if data.test is None:
        return {}
    evaluate_test = evaluation.make_evaluator(classification.eval_step, _arrays(data.test), config.eval_batch_size,
                                              mesh, image_prepare(data.mean, data.std), prefix="test_")
    scores = evaluate_test(state)
    if config.tta:
        probabilities = _probabilities(config, state, data.test.images, data, mesh, pipeline.tta_views(config.augment))
        scores["test_accuracy_tta"] = float(np.mean(np.argmax(probabilities, -1) == data.test.labels))
    return scores


def predict(config, workdir: str, input_path: str, recipe: Recipe) -> list[dict]:
    """Prediction rows (file, predicted class, probability and the top 3) for the image files under
    `input_path` (a folder, or a CSV with a `file` column) with the run's best checkpoint and saved
    preprocessing."""

    def state_for(saved):
        model = recipe.make_model(config, len(saved["class_names"]))
        return pipeline.restore_for_prediction(workdir, model, saved, config.checkpoint.best_metric,
                                               config.checkpoint.best_mode)

    return pipeline.predict_image_files(workdir, input_path, state_for, classification.predict)


def _save_preprocessing(workdir: str, data: image_sources.ImageData) -> None:
    pipeline.save_preprocessing(workdir, data.train.images.shape[1], data.train.images.shape[-1], data.mean,
                              data.std, data.class_names)


def valid_evaluator(config, data, mesh):
    """Loss and accuracy on the validation split (the images normalised with the training statistics)."""
    return evaluation.make_evaluator(classification.eval_step, _arrays(data.valid), config.eval_batch_size, mesh,
                                     image_prepare(data.mean, data.std))


def _probabilities(config, state, images_N, data, mesh, views=None) -> np.ndarray:
    return pipeline.predict_probabilities(classification.predict, state, images_N, config.eval_batch_size, mesh,
                                            data.mean, data.std, views, config.get("tta_beta"))


def _arrays(split) -> dict[str, np.ndarray]:
    return {"image": split.images, "label": split.labels}
