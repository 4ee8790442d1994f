"""Lesson 1 (2018) as the course ran it: an ImageNet ResNet-34 fine-tuned on the Oxford-IIIT Pets (37 breeds);
the `dogs_vs_cats` preset is the course's dogs-vs-cats on TFDS cats_vs_dogs.

  1. head: torchvision's ImageNet ResNet-34 body (research/vision/pretrained.py downloads and checks it) with a
     new fastai head; the body is frozen (BatchNorm on its ImageNet statistics), the head trained with 1cycle.
  2. unfreeze: every layer group trains, at discriminative rates (lr/9, lr/3, lr), with SGDR restarts
     (cycle_len, cycle_mult) and a checkpoint at the end of each cycle (research/core/finetune.py).
10% of the training images validate; the test split is scored once, plain and with test-time augmentation
(flips and zooms). cats_vs_dogs has only a train split: its first 90% train (10% of them validate), the last 10%
test.

Needs a network (the TFDS dataset and the weights) and an accelerator: run it on a cloud machine.
  .venv/bin/python scripts/train.py --config experiments/pets.py --workdir runs/pets
  .venv/bin/python scripts/train.py --config experiments/pets.py:dogs_vs_cats --workdir runs/dogs_vs_cats
The course's fastai reaches about 6-7% error on pets and 99.4% (TTA) on dogs-vs-cats with ResNet-34; not run here
yet (no network on the development machine). Its wiring is tested offline on TFDS's mock examples with a tiny
random-weight ResNet.
"""

import functools
import os

import jax
import ml_collections
import numpy as np

from research.core import classification, configs, evaluation, experiment, inference, sharding
from research.core.train_state import TrainState
from research.vision import architectures, image_sources, imagenet_finetune, pipeline, pretrained, resnet
from research.vision.image_arrays import image_batches, image_prepare

CAPABILITIES = experiment.Capabilities()


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    configs.check_preset(preset, ("default", "dogs_vs_cats"), "experiments/pets.py")
    c = configs.base()
    c.data = image_sources.data_config(source="tfds", tfds_name="oxford_iiit_pet", image_size=224)
    c.arch = "resnet34"
    c.stage_sizes = ()  # () = the architecture's own; smaller for tests (random weights only)
    c.stage_widths = ()
    # A key of research.pretrained.CHECKPOINTS (downloaded into its cache), a local .pth/.safetensors path, or
    # "" for random weights (tests only).
    c.weights = "resnet34"
    c.head = ml_collections.ConfigDict(dict(hidden=(512,), dropout=0.5))
    c.label_smoothing = 0.0
    c.batch_size = 64
    c.eval_batch_size = 64
    c.augment = pipeline.augment_config(flip=True, max_zoom=1.1, max_degrees=10.0, brightness=0.2, contrast=0.2)
    c.head_phase = ml_collections.ConfigDict(dict(epochs=4, learning_rate=3e-3))
    c.finetune = ml_collections.ConfigDict(dict(learning_rate=3e-4, cycle_len=1, cycle_mult=2, num_cycles=2,
                                                group_factor=3.0))
    c.tta = True
    del c.num_epochs, c.learning_rate  # the phases have their own
    if preset == "dogs_vs_cats":
        c.data.update(tfds_name="cats_vs_dogs", train_split="train[:90%]", test_split="train[90%:]")
        c.head_phase.epochs = 2
    return c


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
    prepare = image_prepare(data.mean, data.std)
    arrays = lambda split: {"image": split.images, "label": split.labels}
    evaluate = evaluation.make_evaluator(classification.eval_step, arrays(data.valid), config.eval_batch_size, mesh,
                                         prepare)
    model = make_model(config, len(data.class_names))
    variables = initial_variables(config, model, (1, *data.train.images.shape[1:]))
    with timer("train"):
        state, head = imagenet_finetune.fine_tune(config, workdir, model, variables, run, mesh, evaluate)
    metrics = {**{"head_" + k: v for k, v in head.items()}, **evaluate(state)}
    if data.test is not None:
        metrics.update(evaluation.make_evaluator(classification.eval_step, arrays(data.test), config.eval_batch_size,
                                                 mesh, prepare, prefix="test_")(state))
        if config.tta:
            probabilities = pipeline.predict_probabilities(classification.predict, state, data.test.images,
                                                             config.eval_batch_size, mesh, data.mean, data.std,
                                                             pipeline.tta_views(config.augment))
            metrics["test_accuracy_tta"] = float(np.mean(np.argmax(probabilities, -1) == data.test.labels))
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, classes=len(data.class_names),
                                    train_images=len(data.train.labels))


def predict(config, workdir: str, input_path: str) -> list[dict]:
    """Predictions for new image files with the fine-tuned model (the last SGDR cycle's checkpoint): a row per
    file with its predicted breed, probability and the top 3 (research/vision/pipeline.py)."""

    def state_for(saved):
        model = make_model(config, len(saved["class_names"]))
        size = saved["image_size"]
        variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0),
                                                                       np.zeros((1, size, size, 3), np.float32))
        return inference.restore_for_inference(os.path.join(workdir, "finetune"), model.apply, variables)

    return pipeline.predict_image_files(workdir, input_path, state_for, classification.predict)
