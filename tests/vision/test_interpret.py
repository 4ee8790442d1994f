"""Interpretation: most-confused pairs, and class activation maps of a small ResNet trained on real
Fashion-MNIST items placed on larger canvases (the maps' mean is the logit exactly; their peak finds the item);
Grad-CAM, which equals CAM for a linear head and serves any other head (the wide-head experiment's report)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import PIL.Image
import pytest

from experiments import fashion_mnist_wide_head
from research.core import classification
from research.core.train_state import create_train_state
from research.vision import interpret, plots
from research.vision.image_arrays import normalise
from research.vision.resnet import small_resnet

MEAN, STD = 0.286, 0.353


def test_most_confused_orders_off_diagonal_cells():
    counts = np.array([[50, 3, 0],
                       [7, 40, 3],
                       [1, 0, 60]])
    assert interpret.most_confused(counts, ("a", "b", "c")) == [("b", "a", 7), ("a", "b", 3), ("b", "c", 3),
                                                                ("c", "a", 1)]
    assert interpret.most_confused(counts, ("a", "b", "c"), min_count=3) == [("b", "a", 7), ("a", "b", 3),
                                                                             ("b", "c", 3)]
    labels = np.array([0, 0, 1, 1, 1, 2])
    predictions = np.array([0, 1, 0, 0, 1, 2])
    np.testing.assert_array_equal(plots.confusion_matrix(labels, predictions, 3), [[1, 1, 0], [2, 1, 0], [0, 0, 1]])


def _canvas(images_Nx28x28x1: np.ndarray, quadrants_N: np.ndarray) -> np.ndarray:
    """Each image pasted into one quadrant (0 top left, 1 top right, 2, 3 below) of a black 56x56 canvas."""
    canvas = np.zeros((len(quadrants_N), 56, 56, 1), np.uint8)
    for n, (image, q) in enumerate(zip(images_Nx28x28x1, quadrants_N)):
        canvas[n, 28 * (q // 2):28 * (q // 2) + 28, 28 * (q % 2):28 * (q % 2) + 28] = image
    return canvas


@pytest.fixture(scope="module")
def trained_state(fashion_test_split):
    """A small ResNet (16-32-64 wide) after 50 Adam steps of 64 canvases holding real images in random
    quadrants, trained on the class labels only (no locations): 58% accuracy on held-out canvases."""
    images, labels = fashion_test_split
    model = small_resnet(10, stage_sizes=(1, 1, 1), stage_widths=(16, 32, 64), stage_strides=(2, 2, 2),
                         stem_width=16, stem_stride=2)
    state = jax.jit(lambda key: create_train_state(model, optax.adam(3e-3), key, (1, 56, 56, 1)))(jax.random.key(0))
    step = jax.jit(classification.make_train_step())
    rng = np.random.default_rng(0)
    order, quadrants = rng.permutation(5120), rng.integers(0, 4, 5120)
    for t in range(50):
        rows = order[t * 64:(t + 1) * 64]
        batch = {"image": normalise(_canvas(images[rows], quadrants[rows]), MEAN, STD),
                 "label": jnp.asarray(labels[rows])}
        state, _ = step(state, batch, jax.random.key(t))
    return state


def test_cam_mean_plus_bias_is_the_logit(trained_state, fashion_test_split):
    images = normalise(_canvas(fashion_test_split[0][5120:5184], np.arange(64) % 4), MEAN, STD)
    assert interpret.last_stage_name(trained_state.params) == "layer3_0"
    cams_BxhxwxK, logits_BxK = jax.jit(interpret.class_activation_maps)(trained_state, images)
    assert cams_BxhxwxK.shape == (64, 4, 4, 10)  # 56 -> 28 (stem) -> 14 -> 7 -> 4
    np.testing.assert_allclose(cams_BxhxwxK.mean((1, 2)) + trained_state.params["fc"]["bias"], logits_BxK,
                               atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logits_BxK, classification.predict(trained_state, images), atol=1e-5)
    # Upsampled to the image, cell k sits over pixel 16 k (stem and three stages, each of stride 2).
    classes = jnp.argmax(logits_BxK, -1)
    maps_BxHxW = interpret.class_maps(trained_state, images, classes)
    np.testing.assert_allclose(maps_BxHxW[:, ::16, ::16], np.take_along_axis(
        np.asarray(cams_BxhxwxK), np.asarray(classes)[:, None, None, None], -1)[..., 0], atol=1e-5)


def test_cam_finds_the_object(trained_state, fashion_test_split):
    """On held-out canvases the map of the predicted class peaks in the quadrant holding the object
    (chance: 25%; measured 93%), though training never saw where the objects were."""
    images, labels = fashion_test_split
    rows = np.arange(5120, 5376)
    quadrants = np.random.default_rng(1).integers(0, 4, len(rows))
    x = normalise(_canvas(images[rows], quadrants), MEAN, STD)
    predicted = jnp.argmax(classification.predict(trained_state, x), -1)
    maps_BxHxW = np.asarray(jax.jit(interpret.class_maps)(trained_state, x, predicted))
    assert maps_BxHxW.shape == (len(rows), 56, 56)
    peak_y, peak_x = np.unravel_index(maps_BxHxW.reshape(len(rows), -1).argmax(-1), (56, 56))
    found = (peak_y // 28) * 2 + peak_x // 28
    assert np.mean(found == quadrants) > 0.85, np.mean(found == quadrants)
    assert np.mean(np.asarray(predicted) == labels[rows]) > 0.4  # the class too (chance 10%; measured 58%)


def test_cam_needs_the_linear_fc_classifier(trained_state):
    params = {k: v for k, v in trained_state.params.items() if k != "fc"}
    with pytest.raises(ValueError, match="linear `fc` layer"):
        interpret.class_activation_maps(trained_state.replace(params=params), jnp.zeros((1, 56, 56, 1)))


def test_grad_cam_equals_cam_for_the_linear_fc_head(trained_state, fashion_test_split):
    images = normalise(_canvas(fashion_test_split[0][5120:5152], np.arange(32) % 4), MEAN, STD)
    classes = jnp.arange(32) % 10
    cams_BxhxwxK, _ = jax.jit(interpret.class_activation_maps)(trained_state, images)
    expected = np.take_along_axis(np.asarray(cams_BxhxwxK), np.asarray(classes)[:, None, None, None], -1)[..., 0]
    np.testing.assert_allclose(jax.jit(interpret.grad_cam)(trained_state, images, classes), expected,
                               rtol=1e-4, atol=1e-4)


def test_wide_head_experiment_writes_its_report_with_grad_cam(tfds_dir, tmp_path):
    """The wide-head variant (fastai's head: no `fc` layer) through its whole run on a tiny model: the
    classification report, class activation maps included, is written (it used to crash after training)."""
    config = fashion_mnist_wide_head.get_config()
    config.update_from_flattened_dict({
        "data_dir": tfds_dir, "data.train_examples": 500, "data.test_examples": 100, "batch_size": 50,
        "eval_batch_size": 100, "num_epochs": 1, "learning_rate": 1e-2, "tta": False, "model.stem_width": 8,
        "model.stage_sizes": (1, 1), "model.stage_widths": (8, 16), "model.stage_strides": (2, 2),
        "head.hidden": (16,)})
    results = fashion_mnist_wide_head.train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["metrics"] == results["metrics"]
    for name in ("confusion_matrix.png", "top_losses.png", "cam.png"):
        with PIL.Image.open(os.path.join(tmp_path, name)) as png:
            assert np.asarray(png.convert("L")).std() > 10, name  # not blank
