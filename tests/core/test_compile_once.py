"""The train loop compiles its step once: conftest's `train_steps_compile_once` checks it after every test that
trains (each experiment's step, over at least an epoch in the experiments' tests). Here the check itself is
shown to catch a recompilation, and a real epoch of the lesson-1 step is counted."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.core import classification, sharding, trainer
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


def test_an_epoch_of_the_lesson1_step_compiles_once(tmp_path, train_steps_compile_once):
    images = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32)
    _, batches = _run(tmp_path, images, num_steps=6)
    assert batches.steps_per_epoch == 4
    assert [step._cache_size() for step in train_steps_compile_once] == [1]


def test_the_check_catches_a_step_that_compiles_again(tmp_path, train_steps_compile_once):
    images = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32)
    state, batches = _run(tmp_path, images, num_steps=2)
    step = train_steps_compile_once[0]
    batch = batches.batch(0)
    step(state, {**batch, "image": jnp.asarray(batch["image"], jnp.bfloat16)}, jax.random.key(0))  # new dtype
    assert step._cache_size() == 2
    train_steps_compile_once.clear()  # this test's own recompilation, made on purpose
