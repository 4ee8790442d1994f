"""The train loop compiles its step once: conftest's `train_steps_compile_once` checks it after every test that
trains (each experiment's step, over at least an epoch in the experiments' tests), and each evaluator's step;
scripts/train.py checks its own under FASTJAX_CHECK_COMPILES. Here the check itself is shown to catch a
recompilation, a training that compiled nothing and a recompiling evaluator, and a real epoch of the lesson-1
step is counted."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.core import classification, compile_check, evaluation, sharding, trainer
from research.core.arrays import ArrayBatches
from research.core.train_state import create_train_state
from research.vision.resnet import small_resnet


def _run(tmp_path, images, num_steps):
    mesh = sharding.make_mesh(1)
    labels = np.arange(len(images)) % 3
    batches = ArrayBatches({"image": images, "label": labels}, 8, mesh, seed=0)
    model = small_resnet(num_classes=3, stage_sizes=(1, 1), stage_widths=(4, 8), stage_strides=(1, 2), stem_width=4,
                         stem_stride=1)
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3)
    state = create_train_state(model, tx, jax.random.key(0), (1, *images.shape[1:]))
    return trainer.train(state=state, train_step=classification.make_train_step(), batches=batches,
                         num_steps=num_steps, mesh=mesh, seed=0, workdir=str(tmp_path), progress=False), batches


def _train_steps(recorded):
    return [step for kind, step in recorded if kind == "train"]


def test_an_epoch_of_the_lesson1_step_compiles_once(tmp_path, train_steps_compile_once):
    images = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32)
    _, batches = _run(tmp_path, images, num_steps=6)
    assert batches.steps_per_epoch == 4
    assert [step._cache_size() for step in _train_steps(train_steps_compile_once)] == [1]


def test_the_check_catches_a_step_that_compiles_again(tmp_path, train_steps_compile_once):
    images = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32)
    state, batches = _run(tmp_path, images, num_steps=2)
    step = _train_steps(train_steps_compile_once)[0]
    batch = batches.batch(0)
    step(state, {**batch, "image": jnp.asarray(batch["image"], jnp.bfloat16)}, jax.random.key(0))  # new dtype
    assert step._cache_size() == 2
    assert "train step compiled 2 times" in compile_check.problems(train_steps_compile_once)
    train_steps_compile_once.clear()  # this test's own recompilation, made on purpose


def test_the_check_fails_a_training_that_compiled_no_step(tmp_path, train_steps_compile_once):
    """A run resumed at its end jits a step and never calls it: alone, that is a training that checked nothing."""
    images = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32)
    _run(tmp_path, images, num_steps=2)
    assert compile_check.problems(train_steps_compile_once) is None
    train_steps_compile_once.clear()
    _run(tmp_path, images, num_steps=2)  # resumes at step 2: nothing to run
    assert "compiled no train step" in compile_check.problems(train_steps_compile_once)
    assert compile_check.problems([]) is None  # a test that trains nothing checks nothing
    train_steps_compile_once.clear()


def test_the_check_catches_an_evaluator_that_compiles_again(train_steps_compile_once):
    mesh = sharding.make_mesh(1)
    arrays = {"x": np.arange(10, dtype=np.float32)}
    evaluate = evaluation.make_evaluator(lambda state, batch: {"total": jnp.sum(batch["x"] * batch["mask"] * state),
                                                                "count": jnp.sum(batch["mask"])}, arrays, 4, mesh)
    assert evaluate(jnp.float32(1.0)) == {"valid_total": 4.5}  # the mean over the 10 rows, padding dropped
    assert compile_check.problems(train_steps_compile_once) is None
    evaluate(jnp.int32(1))  # a state of another dtype: compiled again
    assert "eval step compiled 2 times" in compile_check.problems(train_steps_compile_once)
    train_steps_compile_once.clear()
