"""The optimizer builder against Optax's reference optimizers and the definition of decoupled weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.core.optimizers import make_optimizer

PARAMS = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,))}}


def _run(tx, grads_fn, steps=5, params=PARAMS):
    state = tx.init(params)
    for i in range(steps):
        updates, state = tx.update(grads_fn(i), state, params)
        params = optax.apply_updates(params, updates)
    return params


def _grads(i):
    return jax.tree.map(lambda p: jnp.full_like(p, 0.1 * (i + 1)), PARAMS)


def test_sgd_matches_optax_sgd():
    ours = _run(make_optimizer("sgd", 0.1, momentum=0.9), _grads)
    reference = _run(optax.sgd(0.1, momentum=0.9), _grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, reference)


def test_adam_matches_optax_adam():
    ours = _run(make_optimizer("adam", 1e-2, momentum=0.9, b2=0.99, weight_decay=0.5), _grads)
    reference = _run(optax.adam(1e-2, b1=0.9, b2=0.99), _grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, reference)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_decoupled_weight_decay_shrinks_kernels_not_biases(name):
    zero_grads = lambda i: jax.tree.map(jnp.zeros_like, PARAMS)
    params = _run(make_optimizer(name, 0.1, weight_decay=0.5), zero_grads, steps=1)
    np.testing.assert_allclose(params["dense"]["kernel"], 1.0 - 0.1 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(params["dense"]["bias"], 1.0)


def test_gradient_clipping_bounds_the_update():
    huge = lambda i: jax.tree.map(lambda p: jnp.full_like(p, 1e6), PARAMS)
    params = _run(make_optimizer("sgd", 1.0, momentum=0.0, clip_norm=1.0), huge, steps=1)
    step = jax.tree.map(lambda a, b: a - b, PARAMS, params)
    assert float(optax.tree.norm(step)) == pytest.approx(1.0, rel=1e-5)


def test_schedules_drive_injected_hyperparameters():
    tx = make_optimizer("sgd", optax.linear_schedule(1.0, 0.0, 10), momentum=0.9)
    state = tx.init(PARAMS)
    for _ in range(3):
        _, state = tx.update(_grads(0), state, PARAMS)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.8)


def test_unknown_optimizer_name_is_a_clear_error():
    with pytest.raises(ValueError, match="'rmsprop'"):
        make_optimizer("rmsprop", 0.1)


def test_lr_multipliers_scale_parameter_groups():
    params = {"body": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 2))}}
    grads = jax.tree.map(jnp.ones_like, params)
    tx = make_optimizer("sgd", 0.1, momentum=0.0, lr_multipliers=[("^body/", 1 / 9)])
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["head"]["kernel"], -0.1)
    np.testing.assert_allclose(updates["body"]["kernel"], -0.1 / 9, rtol=1e-6)


def _reference_decoupled(name, params, grads_per_step, lr, wd, momentum=0.9, b2=0.99, eps=1e-8):
    """Loshchilov & Hutter's SGDW and AdamW by hand, in numpy: p -= lr * (direction + wd * p), with the
    direction (momentum buffer, or Adam's bias-corrected m / sqrt(v)) built from the gradients alone."""
    p = np.array(params, np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads_per_step, start=1):
        if name == "sgd":
            m = momentum * m + g
            direction = m
        else:
            m, v = momentum * m + (1 - momentum) * g, b2 * v + (1 - b2) * g ** 2
            direction = (m / (1 - momentum ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        p = p - lr * (direction + wd * p)
    return p


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_decoupled_weight_decay_with_nonzero_gradients_matches_the_definition(name):
    """With gradients, coupled decay (L2 added to the gradient, so momentum and Adam's scaling act on it) and
    decoupled decay differ; ours must be the decoupled one, on kernels only."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(6)]
    params = {"dense": {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.ones(4)}}
    lr, wd = 0.1, 0.5
    tx = make_optimizer(name, lr, momentum=0.9, weight_decay=wd)
    ours = _run(tx, lambda i: {"dense": {"kernel": jnp.asarray(grads[i], jnp.float32), "bias": jnp.zeros(4)}},
                steps=6, params=params)
    decoupled = _reference_decoupled(name, kernel, grads, lr, wd)
    np.testing.assert_allclose(ours["dense"]["kernel"], decoupled, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(ours["dense"]["bias"], 1.0)  # no gradient and no decay
    # Coupled decay (wd * p added to the gradient) lands elsewhere, so the check above can tell them apart.
    coupled = np.array(kernel)
    direction_tx = optax.sgd(lr, momentum=0.9) if name == "sgd" else optax.adam(lr, b1=0.9, b2=0.99)
    coupled = _run(optax.chain(optax.add_decayed_weights(wd), direction_tx),
                   lambda i: {"k": jnp.asarray(grads[i], jnp.float32)}, steps=6,
                   params={"k": jnp.asarray(kernel, jnp.float32)})["k"]
    assert np.abs(np.asarray(coupled) - decoupled).max() > 0.05


def test_one_cycle_momentum_is_adams_beta1_at_every_step():
    """experiment.one_cycle_optimizer drives Adam's beta1 with 1cycle's momentum schedule: Adam's first moment
    after each step is the EMA of the gradients with that step's scheduled beta1."""
    from research.core import configs, experiment, schedules
    config = configs.base()
    total = 8
    tx = experiment.one_cycle_optimizer(config, 1e-2, total)
    params = {"w": jnp.zeros((2, 2))}
    state = tx.init(params)
    momentum = schedules.one_cycle_momentum(total, config.one_cycle.pct_start, config.one_cycle.max_momentum,
                                            config.one_cycle.min_momentum)
    mu = np.zeros((2, 2))
    for t in range(total):
        g = np.full((2, 2), float(t + 1))
        _, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        beta1 = float(momentum(t))
        mu = beta1 * mu + (1 - beta1) * g
        assert float(state.hyperparams["momentum"]) == pytest.approx(beta1, abs=1e-6)
        adam_state = next(s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
                          if isinstance(s, optax.ScaleByAdamState))
        np.testing.assert_allclose(adam_state.mu["w"], mu, rtol=1e-5, err_msg=f"step {t}")
    assert float(momentum(0)) == pytest.approx(0.95) and min(float(momentum(t)) for t in range(total)) < 0.86
