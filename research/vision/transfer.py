"""Transfer learning offline (experiments/fashion_transfer.py): pretrain a small ResNet on some Fashion-MNIST
classes, then fine-tune it on the others from a few labelled images each (new head on the frozen body, then
discriminative rates and SGDR), against the same model trained from scratch at each rate of a small grid. Each
phase trains in its own sub-workdir, so rerunning the command resumes."""

import functools
import os

import jax
import numpy as np

from research.core import classification, evaluation, experiment, finetune, sharding
from research.core.errors import InputError
from research.core.train_state import create_train_state, TrainState
from research.vision import architectures, augment, fashion_mnist, image_sources, pipeline, pretrained, resnet
from research.vision.image_arrays import image_batches, image_prepare

MEAN, STD = image_sources.FASHION_MNIST_MEAN, image_sources.FASHION_MNIST_STD


def split_data(config):
    """(source train, source test, {n: target train}, target valid, target test) as (images, labels) with labels
    0..K-1.

    Target training sets hold n images per class for each n in `labelled_per_class`, drawn at random (seeded);
    a smaller set is part of every larger one. The validation images are the last `valid_per_class` of each
    class's shuffled order, disjoint from every training set."""
    train_images, train_labels = fashion_mnist.load("train", config.data_dir or None, config.train_examples or None)
    test_images, test_labels = fashion_mnist.load("test", config.data_dir or None, config.test_examples or None)

    def select(images, labels, classes):
        keep = np.isin(labels, classes)
        return images[keep], np.searchsorted(np.asarray(classes), labels[keep]).astype(np.int32)

    rng = np.random.default_rng(config.seed)
    orders = [rng.permutation(np.flatnonzero(train_labels == k)) for k in config.target_classes]
    targets = {}
    for n in config.labelled_per_class:
        if any(len(order) < n + config.valid_per_class for order in orders):
            raise InputError(f"labelled_per_class={n} + valid_per_class={config.valid_per_class}: a target class "
                             f"has only {min(map(len, orders))} training images")
        picked = rng.permutation(np.concatenate([order[:n] for order in orders]))
        targets[n] = select(train_images[picked], train_labels[picked], config.target_classes)
    valid = np.sort(np.concatenate([order[len(order) - config.valid_per_class:] for order in orders]))
    return (select(train_images, train_labels, config.source_classes),
            select(test_images, test_labels, config.source_classes), targets,
            select(train_images[valid], train_labels[valid], config.target_classes),
            select(test_images, test_labels, config.target_classes))


def make_model(config, num_classes: int, head: bool = False):
    """The lesson-1 small ResNet; with `head`, fastai's head (`config.head`) instead of torchvision's `fc`."""
    model = architectures.small_resnet(config.model, num_classes)
    return model.clone(head=architectures.fastai_head(config.head)) if head else model


def _evaluator(config, data, mesh, prefix):
    """evaluate(state) on (images, labels)."""
    images, labels = data
    return evaluation.make_evaluator(classification.eval_step, {"image": images, "label": labels},
                                     config.eval_batch_size, mesh, image_prepare(MEAN, STD), prefix=prefix)


def _trainer(config, mesh, batches, workdir, evaluate, label_smoothing=None):
    """train(state, num_steps, subdir, **kwargs): the trainer on these batches in workdir/subdir."""
    label_smoothing = config.label_smoothing if label_smoothing is None else label_smoothing
    return finetune.phase_trainer(config, workdir, classification.make_train_step(label_smoothing), batches, mesh,
                                  evaluate)


def setup(config, mesh) -> experiment.Setup:
    """The pretraining (body + `fc` on the source classes): what scripts/lr_find.py sweeps."""
    return setup_on(config, mesh, split_data(config)[0])


def setup_on(config, mesh, source_train) -> experiment.Setup:
    """`setup` on already-split source images (images, labels)."""
    p = config.pretrain
    model = make_model(config, len(config.source_classes))
    input_shape = (1, *source_train[0].shape[1:])
    return experiment.Setup(
        create_state=lambda tx, rng: create_train_state(model, tx, rng, input_shape),
        make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
        train_step=classification.make_train_step(p.label_smoothing), eval_step=classification.eval_step,
        batches=image_batches(*source_train, p.batch_size, mesh, config.seed, MEAN, STD,
                              functools.partial(augment.augment, flip=p.flip, crop_padding=p.crop_padding)))


def pretrain(config, source_train, mesh, workdir: str):
    """Phase 1: the body with a torchvision-style `fc` head on the source classes, 1cycle.

    Returns (trained variables, the initial variables it started from)."""
    run = setup_on(config, mesh, source_train)
    steps = config.pretrain.epochs * run.batches.steps_per_epoch
    state = run.create_state(run.make_tx(config.pretrain.learning_rate, steps), jax.random.key(config.seed,
                                                                                                 impl="rbg"))
    initial = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})  # before donation
    state = _trainer(config, mesh, run.batches, workdir, None, config.pretrain.label_smoothing)(
        state, steps, "pretrain")
    return state, initial


def transfer_and_baseline(config, body: dict, body_init: dict, target_train, evaluate_valid, evaluate_test, mesh,
                          workdir: str) -> dict:
    """Phases 2 (new head, frozen body) and 3 (unfreeze: discriminative rates, SGDR), and the baseline from
    scratch at each rate of the grid, on one labelled set; the baseline's rate is chosen on validation, then the
    fine-tuned model and the chosen baseline are scored on the test images."""
    model = make_model(config, len(config.target_classes), head=True)
    input_shape = (1, *target_train[0].shape[1:])
    augment_fn = functools.partial(augment.augment, flip=config.augment.flip,
                                   crop_padding=config.augment.crop_padding)
    batches = image_batches(*target_train, config.small_batch_size, mesh, config.seed, MEAN, STD, augment_fn)
    train = _trainer(config, mesh, batches, workdir, evaluate_valid)
    # Both arms start from the same new head; the baseline's body is the pretraining's own initialisation.
    # (Host arrays: the trainer donates its state, and `initial` is used more than once.)
    head_init = resnet.init_head(model, jax.random.key(config.seed + 1, impl="rbg"))
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                            np.zeros(input_shape, np.float32))
    initial = pretrained.load_into(shapes, {
        c: {**{k: v for k, v in body_init[c].items() if k != "fc"}, "head": head_init[c]} for c in shapes},
        source="the initial body and new head")
    variables = pretrained.load_into(initial, body, pretrained.HEAD_VARIABLES, source="the pretrained body")
    timer = experiment.Timer()

    h, f = config.head_phase, config.finetune
    recipe = finetune.Recipe(head_steps=h.steps, head_lr=h.learning_rate, finetune_lr=f.learning_rate,
                             cycle_steps=f.cycle_steps, cycle_mult=f.cycle_mult, num_cycles=f.num_cycles,
                             group_factor=f.group_factor)
    with timer("head_and_finetune"):
        state, evaluated = finetune.fine_tune(model, variables, recipe, functools.partial(experiment.optimizer, config),
                                              train, evaluate_valid, head_checkpoint_every=h.steps)
    results = {"head_valid_accuracy": evaluated["head"]["valid_accuracy"],
               "finetuned_valid_accuracy": evaluate_valid(state)["valid_accuracy"],
               "finetuned_test_accuracy": evaluate_test(state)["test_accuracy"]}

    steps = h.steps + finetune.cycle_ends(recipe)[-1]  # as many steps as phases 2 and 3 together
    scratch_valid, scratch_states = {}, {}
    with timer("scratch"):
        for lr in config.scratch_learning_rates:
            state = TrainState.create(apply_fn=model.apply, params=initial["params"],
                                      batch_stats=initial["batch_stats"],
                                      tx=experiment.one_cycle_optimizer(config, lr, steps))
            state = train(state, steps, f"scratch_lr{lr:g}", checkpoint_every=steps)
            scratch_valid[f"{lr:g}"] = evaluate_valid(state)["valid_accuracy"]
            scratch_states[f"{lr:g}"] = state
    best_lr = max(scratch_valid, key=scratch_valid.get)
    scratch_test = evaluate_test(scratch_states[best_lr])["test_accuracy"]
    return {**results, "scratch_valid_accuracy_by_learning_rate": scratch_valid,
            "scratch_best_learning_rate": float(best_lr), "scratch_test_accuracy": scratch_test,
            "scratch_steps": steps, "gap_points": 100 * (results["finetuned_test_accuracy"] - scratch_test),
            "labelled_images": len(target_train[1]), "seconds": timer.total()}


def train_and_evaluate(config, workdir: str) -> dict:
    """Pretrains once, then fine-tunes and trains the baseline for each labelled set; writes results.json with
    every accuracy and gap (results["metrics"]["n100_gap_points"], details under results["n100"])."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    source_train, source_test, targets, target_valid, target_test = split_data(config)
    class_names = [fashion_mnist.CLASS_NAMES[k] for k in config.target_classes]
    pipeline.save_preprocessing(workdir, 28, 1, MEAN, STD, class_names)
    with timer("pretrain"):
        state, body_init = pretrain(config, source_train, mesh, workdir)
    metrics = {"pretrain_source_test_accuracy":
               _evaluator(config, source_test, mesh, "test_")(state)["test_accuracy"]}
    body = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    evaluate_valid = _evaluator(config, target_valid, mesh, "valid_")
    evaluate_test = _evaluator(config, target_test, mesh, "test_")
    details = {}
    for n, target_train in targets.items():
        with timer(f"n{n}"):
            details[f"n{n}"] = transfer_and_baseline(config, body, body_init, target_train, evaluate_valid,
                                                     evaluate_test, mesh, os.path.join(workdir, f"n{n}"))
        for key in ("finetuned_test_accuracy", "scratch_test_accuracy", "gap_points"):
            metrics[f"n{n}_{key}"] = details[f"n{n}"][key]
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, **details,
                                    valid_images=len(target_valid[1]), test_images=len(target_test[1]))


def predict(config, workdir: str, input_path: str) -> list[dict]:
    """Prediction rows (file, predicted target class, probability and the top 3) for new image files, with the
    model fine-tuned from the most labelled images (the last SGDR cycle's checkpoint of n{max}/finetune)."""
    finetuned = os.path.join(workdir, f"n{max(config.labelled_per_class)}", "finetune")
    model = make_model(config, len(config.target_classes), head=True)
    return pipeline.predict_image_files(
        workdir, input_path, lambda saved: pipeline.restore_for_prediction(finetuned, model, saved),
        classification.predict)
