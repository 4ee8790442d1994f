"""The optimizer builder against Optax's reference optimizers and the definition of decoupled weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.optimizers import make_optimizer

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
