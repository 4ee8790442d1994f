"""The classification train/eval steps on real Fashion-MNIST images; label smoothing's loss; a skipped
non-finite step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.core import classification, sharding, trainer
from research.core.optimizers import make_optimizer
from research.core.train_state import create_train_state
from research.vision.image_arrays import image_batches
from research.vision.resnet import small_resnet


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


def test_label_smoothing_loss_equals_the_hand_computed_value():
    """Logits (2, 0, 0), label 0, smoothing 0.1 over K=3 classes: the targets are 0.9 + 0.1/3 for the label and
    0.1/3 for the others; log Z = log(e^2 + 2); the loss is -sum(target * log p)."""
    logits = jnp.array([[2.0, 0.0, 0.0]])
    log_z = np.log(np.exp(2.0) + 2.0)
    expected = (0.9 + 0.1 / 3) * (log_z - 2.0) + 2 * (0.1 / 3) * log_z  # 0.37288
    assert float(classification.cross_entropy(logits, jnp.array([0]), 0.1)[0]) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.37288, abs=1e-5)
    loss = classification.task(label_smoothing=0.1).loss(logits, {"label": jnp.array([0])})
    assert float(loss) == pytest.approx(expected, rel=1e-6)  # what the train step minimises
    unsmoothed = classification.task().loss(logits, {"label": jnp.array([0])})
    assert float(unsmoothed) == pytest.approx(log_z - 2.0, rel=1e-6)


def test_a_skipped_nonfinite_step_leaves_params_batch_stats_and_optimizer_state_bitwise_unchanged(
        fashion_test_split):
    """trainer.guard_nonfinite(skip=True), as trainer.train runs it with skip_nonfinite: a batch holding a NaN
    makes the loss and gradients NaN; the step must return the old state exactly (AdamW moments, step count,
    BatchNorm statistics included), while the same step on clean images changes all of them."""
    images, labels = fashion_test_split
    model = small_resnet(num_classes=10, stage_widths=(8, 16, 32), stem_width=8)
    state = create_train_state(model, make_optimizer("adamw", 1e-2, weight_decay=0.1), jax.random.key(0),
                               (1, 28, 28, 1))
    step = jax.jit(trainer.guard_nonfinite(classification.make_train_step(), skip=True))
    clean = {"image": jnp.asarray(images[:32], jnp.float32) / 255, "label": jnp.asarray(labels[:32], jnp.int32)}
    state, metrics = step(state, clean, jax.random.key(1))  # one real step first: non-zero Adam moments
    assert int(metrics["nonfinite"]) == 0
    before = jax.device_get(state)
    poisoned = {**clean, "image": clean["image"].at[3, 10, 10, 0].set(jnp.nan)}
    skipped, metrics = step(state, poisoned, jax.random.key(2))
    assert int(metrics["nonfinite"]) == 1 and float(metrics["count"]) == 0.0
    after = jax.device_get(skipped)
    for name in ("step", "params", "batch_stats", "opt_state"):
        jax.tree.map(np.testing.assert_array_equal, getattr(before, name), getattr(after, name))
    trained, metrics = step(skipped, clean, jax.random.key(3))
    moved = jax.device_get(trained)
    assert int(metrics["nonfinite"]) == 0 and int(moved.step) == int(before.step) + 1
    for name in ("params", "batch_stats", "opt_state"):
        changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(getattr(before, name)),
                                                             jax.tree.leaves(getattr(moved, name)))]
        assert any(changed), name


def test_mixed_precision_computes_in_bfloat16_and_keeps_float32_weights_and_statistics(fashion_test_split):
    from experiments import fashion_mnist
    from research.vision import classifier as image_classifier
    images, labels = fashion_test_split
    losses = {}
    for mixed in (False, True):
        config = fashion_mnist.get_config()
        config.mixed_precision = mixed
        model = image_classifier.resnet_model(config, 10)
        mesh = sharding.make_mesh()
        batches = image_batches(images[:1024], labels[:1024], 64, mesh, seed=0, mean=0.286, std=0.353)
        state = create_train_state(model, make_optimizer("adam", 3e-3), jax.random.key(0), (1, 28, 28, 1))
        step = trainer.jit_train_step(classification.make_train_step(), state, mesh)
        text = step.lower(state, batches.batch(0), jax.random.key(0)).as_text()
        assert ("bf16" in text) == mixed  # convolutions and activations in bfloat16 only when asked
        losses[mixed] = []
        for i in range(12):
            state, metrics = step(state, batches.batch(i), jax.random.key(i))
            losses[mixed].append(float(metrics["loss"] / metrics["count"]))
        assert {x.dtype for x in jax.tree.leaves((state.params, state.batch_stats, state.opt_state))
                if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
    assert abs(losses[True][0] - losses[False][0]) < 0.02 * losses[False][0]  # the same model at step 0
    assert np.mean(losses[True][-3:]) < 0.7 * losses[True][0]  # and it trains
