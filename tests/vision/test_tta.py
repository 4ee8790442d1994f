"""Test-time augmentation through the lesson-1 experiment: `score_test`'s `test_accuracy_tta`, with the plain
image weighed as one view (tta_beta None) or by tta_beta, equals the accuracy of predictions mixed here by hand
from plain predictions of the image and of its four 1-pixel shifts (the views that follow the cpu preset's
padded crops, edges repeated), on the real Fashion-MNIST test images and a briefly trained model."""

import functools

import jax
import numpy as np
import pytest

from experiments import fashion_mnist as lesson1
from research.core import classification, sharding
from research.vision import augment, classifier, image_sources, pipeline


@pytest.fixture(scope="module")
def trained(tfds_dir):
    """A small ResNet after 40 steps on 2000 training images; the first 1000 test images."""
    config = lesson1.get_config()
    config.update_from_flattened_dict({"data_dir": tfds_dir, "data.train_examples": 2000,
                                       "data.test_examples": 1000, "batch_size": 64, "eval_batch_size": 500,
                                       "model.stem_width": 8, "model.stage_widths": (8, 16, 32)})
    mesh = sharding.make_mesh()
    data = image_sources.load_image_data(config.data, config.data_dir)
    run = classifier.setup_on(config, mesh, classifier.Recipe(), data)
    state = run.create_state(run.make_tx(1e-2, 40), jax.random.key(0))
    step = jax.jit(run.train_step)
    for i in range(40):
        state, _ = step(state, run.batches.batch(i), jax.random.key(i))
    return config, mesh, data, state


def shifted(images_NxHxWxC: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The images moved by (dy, dx) pixels, the edge rows and columns repeated into the gap."""
    _, height, width, _ = images_NxHxWxC.shape
    rows = np.clip(np.arange(height) - dy, 0, height - 1)
    cols = np.clip(np.arange(width) - dx, 0, width - 1)
    return images_NxHxWxC[:, rows][:, :, cols]


def test_shifted_views_are_augments_edge_shifts():
    images = np.arange(2 * 5 * 5).reshape(2, 5, 5, 1).astype(np.uint8)
    ours = [shifted(images, dy, dx) for dy, dx in [(1, 0), (-1, 0), (0, 1), (0, -1)]]
    theirs = augment.tta_views(images, shift_pixels=1, pad_mode="edge")
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


@pytest.mark.parametrize("beta", [None, 0.3])
def test_test_accuracy_tta_equals_predictions_mixed_by_hand(trained, beta):
    config, mesh, data, state = trained
    config = config.copy_and_resolve_references()
    config.tta_beta = beta
    scores = classifier.score_test(config, state, data, mesh)

    images, labels = data.test.images, data.test.labels
    plain = functools.partial(pipeline.predict_probabilities, classification.predict, state,
                              batch_size=500, mesh=mesh, mean=data.mean, std=data.std)
    plain_NxK = plain(images)
    views_NxK = [plain(shifted(images, dy, dx)) for dy, dx in [(1, 0), (-1, 0), (0, 1), (0, -1)]]
    weight = 1 / 5 if beta is None else beta
    mixed_NxK = weight * plain_NxK + (1 - weight) * np.mean(views_NxK, axis=0)
    # The library's own mixing, given the views explicitly, agrees with the hand mix.
    library_NxK = plain(images, views=functools.partial(augment.tta_views, shift_pixels=1, pad_mode="edge"),
                        beta=beta)
    np.testing.assert_allclose(library_NxK, mixed_NxK, atol=1e-6)

    assert scores["test_accuracy"] == pytest.approx(np.mean(np.argmax(plain_NxK, -1) == labels), abs=1e-9)
    assert scores["test_accuracy_tta"] == pytest.approx(np.mean(np.argmax(mixed_NxK, -1) == labels), abs=1e-9)
    # The views matter on these images, so a TTA that dropped them, or weighed them otherwise, would show.
    changed = np.mean(np.argmax(mixed_NxK, -1) != np.argmax(plain_NxK, -1))
    print(f"beta={beta}: accuracy {scores['test_accuracy']:.4f}, with TTA {scores['test_accuracy_tta']:.4f}, "
          f"{changed:.1%} of predictions changed")
    assert changed > 0.005
