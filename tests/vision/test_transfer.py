"""Transfer learning: frozen layer groups, discriminative learning rates, fastai's head, and pets' inputs on TFDS's
mock data. The Fashion-MNIST transfer experiment's phases run in tests/test_experiments.py."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import pets
from research.core import classification, optimizers
from research.core.errors import InputError
from research.core.train_state import TrainState
from research.vision import imagenet_classifier, resnet
from research.vision.head import concat_pool, FastaiHead
from research.vision.image_arrays import normalise

TINY = dict(num_classes=5, stage_sizes=(1, 1, 1), stage_widths=(8, 16, 32), stem_width=8, stem_stride=2)


def _group(tree, pattern):
    """The leaves of `tree` whose path matches `pattern`, by path."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {optimizers.param_path(p): np.asarray(v) for p, v in leaves
            if re.search(pattern, optimizers.param_path(p))}


@pytest.fixture(scope="module")
def images_batch(fashion_test_split):
    images, labels = fashion_test_split
    return {"image": normalise(images[:32], 0.286, 0.353), "label": jnp.asarray(labels[:32] % 5, jnp.int32)}


@pytest.fixture(scope="module")
def tiny_model():
    """A tiny small-ResNet with fastai's head, and its variables (host copies, so no step can donate them)."""
    model = resnet.small_resnet(**TINY).clone(head=functools.partial(FastaiHead, hidden=(16,)))
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    return model, jax.device_get(variables)


def _train(tiny_model, frozen_groups: int, batch, steps=2):
    model, variables = tiny_model
    groups = model.layer_groups()
    # AdamW with weight decay: a frozen group must not even decay.
    tx = optimizers.make_optimizer("adamw", 1e-2, weight_decay=0.1, frozen=groups[:frozen_groups])
    state = TrainState.create(apply_fn=model.clone(frozen_groups=frozen_groups).apply, params=variables["params"],
                              batch_stats=variables["batch_stats"], tx=tx)
    step = jax.jit(classification.make_train_step())
    for i in range(steps):
        state, metrics = step(state, batch, jax.random.key(i))
    return groups, variables, state, metrics


def _changed(before: dict, after: dict) -> dict[str, bool]:
    return {name: not np.array_equal(before[name], after[name]) for name in before}


def test_frozen_body_keeps_params_and_running_stats_bitwise_and_head_trains(tiny_model, images_batch):
    groups, variables, state, metrics = _train(tiny_model, frozen_groups=2, batch=images_batch)
    for collection, trained in (("params", state.params), ("batch_stats", state.batch_stats)):
        for frozen in groups[:2]:
            before = _group(variables[collection], frozen)
            assert before and not any(_changed(before, _group(trained, frozen)).values()), (collection, frozen)
        head = _changed(_group(variables[collection], groups[2]), _group(trained, groups[2]))
        assert head and all(head.values()), (collection, head)
    assert float(metrics["grad_norm"]) > 0
    # No optimizer state is kept for the frozen body: Adam's moments cover the head only.
    moments = [s for s in jax.tree_util.tree_leaves(state.opt_state) if getattr(s, "ndim", 0) > 0]
    head_sizes = sum(v.size for v in _group(variables["params"], groups[2]).values())
    assert sum(m.size for m in moments) == 2 * head_sizes


def test_freezing_the_first_group_only_trains_the_second_and_the_head(tiny_model, images_batch):
    groups, variables, state, _ = _train(tiny_model, frozen_groups=1, batch=images_batch)
    first = _changed(_group(variables["params"], groups[0]), _group(state.params, groups[0]))
    second = _changed(_group(variables["params"], groups[1]), _group(state.params, groups[1]))
    second_stats = _changed(_group(variables["batch_stats"], groups[1]), _group(state.batch_stats, groups[1]))
    assert not any(first.values())
    assert all(second.values()) and all(second_stats.values())


def test_frozen_groups_must_leave_the_head_training():
    model = resnet.small_resnet(**TINY).clone(frozen_groups=3)
    with pytest.raises(InputError, match="frozen_groups=3"):
        jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def test_resnet_layer_groups_are_fastais():
    model = resnet.resnet34(num_classes=4)
    params = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                            jnp.zeros((1, 32, 32, 3)))["params"]
    first, second, head = (set(n.split("/")[0] for n in _group(params, g)) for g in model.layer_groups())
    assert first == {"conv1", "bn1"} | {f"layer1_{i}" for i in range(3)} | {f"layer2_{i}" for i in range(4)}
    assert second == {f"layer3_{i}" for i in range(6)} | {f"layer4_{i}" for i in range(3)}
    assert head == {"fc"}


def test_discriminative_rates_scale_each_groups_update(tiny_model):
    model, variables = tiny_model
    grads = jax.tree.map(jnp.ones_like, variables["params"])
    groups = model.layer_groups()
    multipliers = optimizers.discriminative_multipliers(groups)
    assert [m for _, m in multipliers] == pytest.approx([1 / 9, 1 / 3])
    tx = optimizers.make_optimizer("sgd", 0.3, momentum=0.0, lr_multipliers=multipliers)
    updates, _ = jax.jit(tx.update)(grads, tx.init(grads), grads)
    for pattern, expected in zip(groups, (-0.3 / 9, -0.3 / 3, -0.3)):
        sizes = _group(updates, pattern)
        assert sizes and all(np.allclose(u, expected, rtol=1e-6) for u in sizes.values()), pattern
    assert len(sum((list(_group(updates, g)) for g in groups), [])) == len(jax.tree.leaves(updates))


def test_frozen_and_discriminative_groups_combine():
    params = {"conv1": {"kernel": jnp.ones((3, 3, 1, 2))}, "layer2_0": {"kernel": jnp.ones((2, 2))},
              "head": {"kernel": jnp.ones((2, 2))}}
    tx = optimizers.make_optimizer("adamw", 0.1, weight_decay=0.5, frozen=["^conv1/"],
                                   lr_multipliers=[("^layer2_", 1 / 3)])
    state = tx.init(params)
    updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    assert float(jnp.abs(updates["conv1"]["kernel"]).max()) == 0.0
    # Adam's first step is lr * sign(g) (+ decoupled decay lr * wd * p); the middle group a third of it.
    np.testing.assert_allclose(updates["head"]["kernel"], -0.1 * (1 + 0.5), rtol=1e-5)
    np.testing.assert_allclose(updates["layer2_0"]["kernel"], -0.1 * (1 + 0.5) / 3, rtol=1e-5)
    assert float(optimizers.current_learning_rate(state)) == pytest.approx(0.1)


def test_fastai_head_pools_max_and_mean_and_drops_out_only_in_training():
    features = np.random.default_rng(0).normal(size=(4, 3, 3, 6)).astype(np.float32)
    pooled = np.asarray(jax.jit(concat_pool)(features))
    np.testing.assert_allclose(pooled[:, :6], features.max(axis=(1, 2)))
    np.testing.assert_allclose(pooled[:, 6:], features.mean(axis=(1, 2)), rtol=1e-6)
    head = FastaiHead(num_classes=3, hidden=(8,))
    variables = jax.jit(functools.partial(head.init, train=False))(jax.random.key(1), features)
    assert variables["params"]["dense0"]["kernel"].shape == (12, 8)
    apply = jax.jit(lambda key, train: head.apply(variables, features, train=train, rngs={"dropout": key},
                                                  mutable=["batch_stats"])[0], static_argnums=1)
    assert apply(jax.random.key(2), False).shape == (4, 3)
    np.testing.assert_array_equal(apply(jax.random.key(2), False), apply(jax.random.key(3), False))
    assert not np.allclose(apply(jax.random.key(2), True), apply(jax.random.key(3), True))


def test_pets_data_model_and_variables_on_tfds_mock_examples():
    """The cloud experiment's inputs (TFDS images, a ResNet with fastai's head, its variables) on TFDS's mock
    examples with a tiny random-weight ResNet: no network, no pretrained weights (tests/test_experiments.py
    trains the presets on them)."""
    config = pets.get_config()
    config.update(dict(weights="", stage_sizes=(1, 1), stage_widths=(8, 16)))
    config.data.image_size = 32
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        data = imagenet_classifier.load_data(config)
    train = data.train
    assert len(train.class_names) == 37 and train.images.shape == (18, 32, 32, 3)  # 2 of 20 held out to validate
    assert len(data.valid.labels) == 2 and data.test.images.shape[0] == 20
    np.testing.assert_allclose(data.mean, [0.485, 0.456, 0.406])  # ImageNet's, for the pretrained body
    model = imagenet_classifier.make_model(config, len(train.class_names))
    variables = imagenet_classifier.initial_variables(config, model, (1, 32, 32, 3))
    assert variables["params"]["head"]["dense1"]["kernel"].shape == (512, 37)
    assert variables["params"]["layer2_0"]["conv1"]["kernel"].shape == (3, 3, 8, 16)
    assert model.layer_groups()[1] == r"^(layer2_\d+)/"


def test_dogs_vs_cats_preset_reads_tfds_cats_vs_dogs():
    config = pets.get_config("dogs_vs_cats")
    config.data.image_size = 16
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        data = imagenet_classifier.load_data(config)
    assert data.class_names == data.test.class_names == ("cat", "dog")
    assert data.train.images.shape[1:] == (16, 16, 3)
