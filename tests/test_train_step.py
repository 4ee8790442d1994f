"""The classification train/eval steps on real Fashion-MNIST images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import sharding, trainer
from research.tasks import classification
from research.data.arrays import image_batches
from research.models.resnet import small_resnet
from research.optimizers import make_optimizer
from research.train_state import create_train_state


def test_train_step_lowers_the_loss_on_real_data(fashion_test_split):
    images, labels = fashion_test_split
    mesh = sharding.make_mesh()
    batches = image_batches(images[:4096], labels[:4096], 64, mesh, seed=0, mean=0.286, std=0.353)
    model = small_resnet(num_classes=10, stage_widths=(16, 32, 64), stem_width=16)
    state = create_train_state(model, make_optimizer("adam", 1e-2), jax.random.key(0), (1, 28, 28, 1))
    step = trainer.jit_train_step(classification.make_train_step(), state, mesh)
    losses = []
    for i in range(40):
        state, metrics = step(state, batches.batch(i), jax.random.key(i))
        losses.append(float(metrics["loss"] / metrics["count"]))
    assert losses[0] > 1.8  # ~log(10) at initialisation
    assert np.mean(losses[-5:]) < 0.55 * losses[0]
    assert int(state.step) == 40


def test_eval_step_counts_only_masked_examples():
    logits = jnp.array([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0], [0.0, 5.0]])
    labels = jnp.array([0, 0, 0, 1])
    mask = jnp.array([True, True, False, False])
    metrics = classification.summed_metrics(logits, labels, mask)
    assert float(metrics["count"]) == 2.0
    assert float(metrics["accuracy"]) == 1.0  # row 0 right, row 1 wrong; rows 2-3 masked out
    expected_loss = float(jax.nn.logsumexp(jnp.array([5.0, 0.0])) * 2 - 5.0)
    assert float(metrics["loss"]) == pytest.approx(expected_loss, rel=1e-5)
