"""The task-neutral core: one step builder over tasks, dict batches, metrics finished from sums, a recurrent carry
in the train state."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.core import optimizers, regression, sharding, steps
from research.core.arrays import ArrayBatches, padded_batches
from research.core.evaluation import make_evaluator
from research.core.train_state import TrainState


class Accumulator(nn.Module):
    """outputs = dense(x) + carry; new carry = carry + x. Enough to see a carry flow through the steps."""

    @nn.compact
    def __call__(self, x_BxD, train: bool, carry):
        return nn.Dense(1)(x_BxD)[:, 0] + carry[:, 0], carry + x_BxD


def _carry_state(batch_size=4, features=3):
    model = Accumulator()
    params = model.init(jax.random.key(0), jnp.zeros((batch_size, features)), False,
                        jnp.zeros((batch_size, features)))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(0.1),
                             carry=jnp.zeros((batch_size, features)))


def test_the_train_step_carries_the_recurrent_state_from_batch_to_batch():
    state = _carry_state()
    task = regression.task(["x"])
    step = jax.jit(steps.make_train_step(task))
    x = jnp.arange(12.0).reshape(4, 3) / 10
    batch = {"x": x, "target": jnp.ones(4)}
    state, _ = step(state, batch, jax.random.key(0))
    np.testing.assert_allclose(state.carry, x)
    state, metrics = step(state, batch, jax.random.key(1))
    np.testing.assert_allclose(state.carry, 2 * x)
    assert int(state.step) == 2 and float(metrics["count"]) == 4


def test_a_carry_is_split_over_devices_like_a_batch():
    mesh = sharding.make_mesh(1)
    shardings = sharding.state_shardings(_carry_state(), mesh)
    assert shardings.carry == sharding.batch_sharded(mesh)
    assert shardings.params["Dense_0"]["kernel"] == sharding.replicated(mesh)


def test_rmse_over_padded_batches_is_the_rmse_of_the_whole_set():
    """RMSE is not a mean of per-batch RMSEs: it is finished from summed squared errors (here 7 rows in batches
    of 3, the last one padded)."""

    class Identity(nn.Module):
        @nn.compact
        def __call__(self, x_B, train: bool):
            return x_B + 0 * self.param("unused", nn.initializers.zeros, ())

    model = Identity()
    params = model.init(jax.random.key(0), jnp.zeros(3), False)["params"]
    state = TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(0.1))
    predictions = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], np.float32)
    targets = np.array([1.5, 2.0, 2.0, 4.0, 8.0, 6.0, 6.5], np.float32)
    task = regression.task(["x"])
    evaluate = make_evaluator(steps.make_eval_step(task), {"x": predictions, "target": targets}, 3,
                              sharding.make_mesh(1), finish=task.finish)
    scores = evaluate(state)
    errors = predictions - targets
    np.testing.assert_allclose(scores["valid_rmse"], np.sqrt(np.mean(errors ** 2)), rtol=1e-6)
    np.testing.assert_allclose(scores["valid_mae"], np.mean(np.abs(errors)), rtol=1e-6)
    assert [int(b["mask"].sum()) for b in padded_batches({"x": predictions}, 3)] == [3, 3, 1]


def test_array_batches_are_a_pure_function_of_seed_and_step_and_cover_each_row_once_per_epoch():
    mesh = sharding.make_mesh(1)
    arrays = {"user": np.arange(100), "rating": np.linspace(0, 5, 100)}
    make = lambda: ArrayBatches(arrays, 10, mesh, seed=7)
    a, b = make(), make()
    assert a.steps_per_epoch == 10
    seen = np.concatenate([np.asarray(a.batch(step)["user"]) for step in range(10)])
    assert sorted(seen.tolist()) == list(range(100))
    np.testing.assert_array_equal(b.batch(13)["user"], a.batch(13)["user"])  # any order of calls
    np.testing.assert_array_equal(a.batch_traceable(jnp.asarray(13))["user"], a.batch(13)["user"])
    assert a.batch(3)["rating"].dtype == jnp.float32 and a.batch(3)["user"].dtype == jnp.int32
    assert not np.array_equal(a.batch(10)["user"], a.batch(0)["user"])  # a new permutation each epoch


class BodyAndHead(nn.Module):
    @nn.compact
    def __call__(self, x_BxD, train: bool):
        return nn.Dense(1, name="head")(nn.relu(nn.Dense(8, name="body")(x_BxD)))[:, 0]


def test_frozen_parameters_get_no_gradient_and_no_backward_pass():
    """make_train_step(frozen=...) updates the trainable parameters exactly as the plain step with the same
    (frozen) optimizer does, leaves the frozen ones bitwise alone, reports the trainable gradient's norm, and
    its compiled step has no backward matmuls below the trainable layer."""
    model = BodyAndHead()
    x = jax.random.normal(jax.random.key(1), (16, 5))
    batch = {"x": x, "target": jnp.sin(x[:, 0])}
    params = model.init(jax.random.key(0), x, False)["params"]
    tx = optimizers.make_optimizer("adamw", 0.1, weight_decay=0.1, frozen=["^body"])
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    task = regression.task(["x"])
    plain, frozen = steps.make_train_step(task), steps.make_train_step(task, frozen=["^body"])
    plain_state, plain_metrics = jax.jit(plain)(state, batch, jax.random.key(2))
    frozen_state, frozen_metrics = jax.jit(frozen)(state, batch, jax.random.key(2))

    np.testing.assert_allclose(frozen_state.params["head"]["kernel"], plain_state.params["head"]["kernel"], rtol=1e-6)
    assert not np.allclose(frozen_state.params["head"]["kernel"], params["head"]["kernel"])
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(frozen_state.params["body"][name], params["body"][name])
    head_grads = jax.grad(lambda head: task.loss(model.apply({"params": {**params, "head": head}}, x, False), batch))(
        params["head"])
    np.testing.assert_allclose(frozen_metrics["grad_norm"] / frozen_metrics["count"], optax.tree.norm(head_grads),
                               rtol=1e-5)
    assert plain_metrics["grad_norm"] > frozen_metrics["grad_norm"]  # the plain step also differentiates the body

    def matmuls(step):
        return str(jax.make_jaxpr(step)(state, batch, jax.random.key(2))).count("dot_general")

    assert matmuls(frozen) == 3  # body and head forward, the head's kernel gradient
    assert matmuls(plain) == 5  # ... and the cotangent into the body, the body's kernel gradient
