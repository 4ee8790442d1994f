"""The learning-rate range test on a problem with a known answer, purity and robustness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax.training import train_state

from research.core import classification, lr_finder
from research.core.optimizers import make_optimizer
from research.core.train_state import create_train_state

# Least squares 0.5 * mean((X w - y)^2): plain gradient descent diverges above lr = 2 / L, L = the largest
# eigenvalue of X^T X / n.
X = jax.random.normal(jax.random.key(0), (256, 8)) * jnp.array([3.0, 1, 1, 1, 1, 1, 0.5, 0.1])
Y = X @ jnp.arange(1.0, 9.0) + 0.5 * jax.random.normal(jax.random.key(1), (256,))
L = float(jnp.linalg.eigvalsh(X.T @ X / len(X)).max())


def least_squares_step(state, batch, rng):
    def loss_fn(w):
        return 0.5 * jnp.mean((batch["x"] @ w["w"] - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss, "count": jnp.ones(())}


def _state():
    tx = make_optimizer("sgd", 1e-4, momentum=0.0)
    return train_state.TrainState.create(apply_fn=None, params={"w": jnp.zeros(8)}, tx=tx)


def _batch(i):
    """Minibatches of 128 rows: their gradient noise keeps every direction excited, as in real training."""
    rows = jax.random.permutation(jax.random.key(i), len(X))[:128]
    return {"x": X[rows], "y": Y[rows]}


def test_divergence_is_detected_within_a_factor_2_of_two_over_L():
    result = lr_finder.lr_range_test(least_squares_step, _state(), _batch, start_lr=1e-4, end_lr=100.0,
                                     num_steps=200, diverge=4.0)
    assert result.num_steps < 200  # it stopped early
    assert 2 / L / 2 < result.divergence_value < 2 / L * 2, (result.divergence_value, 2 / L)
    assert result.suggestions["minimum"] < 2 / L


def test_callers_state_is_bitwise_unchanged_and_runs_repeat():
    state = _state()
    before = jax.tree.map(np.array, (state.params, state.opt_state))
    first = lr_finder.lr_range_test(least_squares_step, state, _batch, start_lr=1e-4, end_lr=100.0, num_steps=60)
    second = lr_finder.lr_range_test(least_squares_step, state, _batch, start_lr=1e-4, end_lr=100.0, num_steps=60)
    after = jax.tree.map(np.array, (state.params, state.opt_state))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    np.testing.assert_array_equal(first.losses, second.losses)
    assert first.suggestions == second.suggestions


def test_nan_losses_give_finite_suggestions():
    losses = np.array([2.0, 1.9, 1.7, np.nan, 1.2, 0.9, 0.8, np.inf, 3.0])
    rates = lr_finder.sweep_values(1e-5, 1.0, len(losses))
    suggestions = lr_finder.suggest(rates, losses)
    assert all(np.isfinite(v) and v > 0 for v in suggestions.values())


def test_smoothing_is_bias_corrected():
    np.testing.assert_allclose(lr_finder.smooth(np.full(5, 3.0)), 3.0)
    np.testing.assert_allclose(lr_finder.smooth_zero_phase(np.full(5, 3.0)), 3.0)


def test_compiled_sweep_equals_stepwise_sweep():
    kwargs = dict(start_lr=1e-4, end_lr=100.0, num_steps=150)
    stepwise = lr_finder.lr_range_test(least_squares_step, _state(), _batch, **kwargs)
    compiled = lr_finder.lr_range_test(least_squares_step, _state(), _batch, compiled=True, **kwargs)
    assert compiled.num_steps == stepwise.num_steps < 150
    np.testing.assert_allclose(compiled.losses, stepwise.losses, rtol=1e-5)
    assert compiled.suggestions == pytest.approx(stepwise.suggestions, rel=1e-4)


def test_vmapped_seeds_equal_single_sweeps():
    inits = [{"w": jax.random.normal(jax.random.key(k), (8,))} for k in range(3)]
    tx = make_optimizer("sgd", 1e-4, momentum=0.0)
    single_states = [train_state.TrainState.create(apply_fn=None, params=p, tx=tx) for p in inits]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *single_states)

    def batch_at(i, k):
        return _batch(i * 3 + k)

    kwargs = dict(start_lr=1e-4, end_lr=100.0, num_steps=120)
    multi = lr_finder.lr_range_test_seeds(least_squares_step, stacked, batch_at, [0, 1, 2], **kwargs)
    for k, state in enumerate(single_states):
        single = lr_finder.lr_range_test(least_squares_step, state, lambda i: batch_at(i, k), seed=k,
                                         compiled=True, **kwargs)
        np.testing.assert_allclose(multi.losses_per_seed[k], single.losses[:multi.num_steps], rtol=1e-5)
    np.testing.assert_allclose(multi.losses, multi.losses_per_seed.mean(0))
    assert all(np.isfinite(v) for v in multi.suggestions.values())


def test_weight_decay_sweep_runs_and_reports_its_hyperparameter():
    tx = make_optimizer("adamw", 1e-2, weight_decay=0.0)
    state = train_state.TrainState.create(apply_fn=None, params={"w": jnp.zeros((8, 1))}, tx=tx)

    def step(state, batch, rng):
        def loss_fn(params):
            return 0.5 * jnp.mean((batch["x"] @ params["w"][:, 0] - batch["y"]) ** 2)
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), {"loss": loss, "count": jnp.ones(())}

    result = lr_finder.lr_range_test(step, state, _batch, start_lr=1e-4, end_lr=1e3, num_steps=80,
                                     hyperparam="weight_decay")
    assert result.hyperparam == "weight_decay"
    assert result.values[0] == pytest.approx(1e-4)
    # Heavy weight decay pulls w to 0 and the loss back up towards 0.5 * mean(y^2).
    assert result.losses.max() > 2 * result.losses.min()


def test_unknown_hyperparameter_is_a_clear_error():
    with pytest.raises(KeyError, match="'beta3'"):
        lr_finder.lr_range_test(least_squares_step, _state(), _batch, num_steps=5, hyperparam="beta3")


def test_suggestions_ignore_an_early_spike():
    rates = lr_finder.sweep_values(1e-6, 1.0, 100)
    losses = 2.3 - 2.0 / (1 + np.exp(-(np.log10(rates) + 2.5) * 3))  # falls around 3e-3
    losses[np.log10(rates) > -0.7] = 10.0  # blows up at 0.2
    spiked = losses.copy()
    spiked[5] = 50.0  # an early spike
    assert lr_finder.suggest(rates, spiked) == pytest.approx(lr_finder.suggest(rates, losses), rel=0.15)
    suggestions = lr_finder.suggest(rates, losses)
    assert 1e-3 < suggestions["steep"] < 1e-2


def test_sweep_with_param_groups_keeps_their_ratio():
    """Two copies of the same problem, the second with a third of the rate: it diverges 3x later in the sweep,
    because the sweep moves the base rate and the group keeps its multiplier."""
    tx = make_optimizer("sgd", 1e-4, momentum=0.0, lr_multipliers=[("^slow/", 1 / 3)])
    state = train_state.TrainState.create(apply_fn=None, params={"fast": jnp.zeros(8), "slow": jnp.zeros(8)},
                                          tx=tx)

    def step(state, batch, rng):
        def loss_fn(params, name):
            return 0.5 * jnp.mean((batch["x"] @ params[name] - batch["y"]) ** 2)
        grads = {name: jax.grad(loss_fn)(state.params, name)[name] for name in ("fast", "slow")}
        new_state = state.apply_gradients(grads=grads)
        return new_state, {"loss": loss_fn(new_state.params, "slow"),
                           "count": jnp.ones(())}

    result = lr_finder.lr_range_test(step, state, _batch, start_lr=1e-4, end_lr=100.0, num_steps=200)
    # The reported loss is the slow group's: it diverges at base rate ~3 x 2/L.
    assert 3 * 2 / L / 2 < result.divergence_value < 3 * 2 / L * 2, (result.divergence_value, 6 / L)


def test_compiled_and_stepwise_sweeps_count_the_step_whose_loss_is_nan():
    """A step that diverges with a NaN loss (not merely a large one) is run and reported by both sweeps; the
    compiled sweep masks the steps after it with NaN too, and must not mistake the NaN of the diverging step
    for the first masked one."""
    def step(state, batch, rng):
        new_state, metrics = least_squares_step(state, batch, rng)
        overflow = state.opt_state.hyperparams["learning_rate"] > 0.3  # as a float16 loss would overflow
        return new_state, {**metrics, "loss": jnp.where(overflow, jnp.nan, metrics["loss"])}

    kwargs = dict(start_lr=1e-4, end_lr=10.0, num_steps=50)
    stepwise = lr_finder.lr_range_test(step, _state(), _batch, **kwargs)
    compiled = lr_finder.lr_range_test(step, _state(), _batch, compiled=True, **kwargs)
    first_nan = int(np.argmax(lr_finder.sweep_values(1e-4, 10.0, 50) > 0.3))
    assert stepwise.num_steps == compiled.num_steps == first_nan + 1 < 50
    assert np.isnan(compiled.losses[-1]) and np.isnan(stepwise.losses[-1])
    np.testing.assert_allclose(compiled.losses[:-1], stepwise.losses[:-1], rtol=1e-5)
    assert compiled.suggestions == pytest.approx(stepwise.suggestions, rel=1e-4)
    multi = lr_finder.lr_range_test_seeds(step, jax.tree.map(lambda x: jnp.stack([x, x]), _state()),
                                          lambda i, k: _batch(i), [0, 1], **kwargs)
    assert multi.num_steps == first_nan + 1


class _BatchNormNet(nn.Module):
    """Dense -> BatchNorm -> ReLU -> Dense: a model with batch statistics that training moves."""

    @nn.compact
    def __call__(self, images, train: bool):
        x = nn.Dense(16)(images.reshape(images.shape[0], -1))
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.5)(x))
        return nn.Dense(10)(x)


def test_every_sweep_leaves_the_callers_state_with_batchnorm_bitwise_unchanged(
        fashion_test_split):
    images, labels = fashion_test_split
    images = jnp.asarray(images[:512], jnp.float32) / 255
    labels = jnp.asarray(labels[:512], jnp.int32)

    def batch_at(i, k=0):
        rows = jax.lax.dynamic_slice_in_dim(jax.random.permutation(jax.random.key(k), 512), (i % 8) * 64, 64)
        return {"image": images[rows], "label": labels[rows]}

    tx = make_optimizer("adamw", 1e-6, weight_decay=0.01)

    def states():
        """One state and two stacked ones, the same on every call. (The caller's copy is compared with a second
        call's, not with its own host copy: on CPU a host copy shares the buffers and would block donation.)"""
        create = lambda key: create_train_state(_BatchNormNet(), tx, key, (1, 28, 28, 1))
        return create(jax.random.key(0)), jax.vmap(create)(jax.vmap(jax.random.key)(jnp.arange(2)))

    state, stacked = states()
    train_step = classification.make_train_step()
    kwargs = dict(start_lr=1e-5, end_lr=10.0, num_steps=40)
    single = lr_finder.lr_range_test(train_step, state, batch_at, compiled=True, **kwargs)
    stepwise = lr_finder.lr_range_test(train_step, state, batch_at, **kwargs)
    multi = lr_finder.lr_range_test_seeds(train_step, stacked, batch_at, [0, 1], **kwargs)
    arrays = [x for x in jax.tree.leaves((state, stacked)) if isinstance(x, jax.Array)]
    assert not any(x.is_deleted() for x in arrays)  # not donated (device_get would answer from its host copy)
    after, before = jax.device_get((state, stacked)), jax.device_get(states())
    for name in ("params", "batch_stats", "opt_state", "step"):
        jax.tree.map(np.testing.assert_array_equal, getattr(before[0], name), getattr(after[0], name))
        jax.tree.map(np.testing.assert_array_equal, getattr(before[1], name), getattr(after[1], name))
    # The sweeps did train (the losses fell), so an unchanged state means an untouched one.
    for result in (single, stepwise, multi):
        assert result.losses.min() < 0.8 * result.losses[0]
