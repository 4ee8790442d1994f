"""What the image classifiers share: augmentation and test-time views from config keys, the preprocessing a run
saves beside its checkpoints, and predictions for new image files with that preprocessing."""

import csv
import functools
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from research.core import evaluation, inference, sharding
from research.core.errors import InputError
from research.vision import augment, images
from research.vision.image_arrays import normalise

PREPROCESSING_FILE = "preprocessing.json"


def augment_config(**overrides) -> ml_collections.ConfigDict:
    """`config.augment` (research/augment.py): zero/False leaves a transform out."""
    c = ml_collections.ConfigDict(dict(flip=False, crop_padding=0, pad_mode="constant", crop_probability=1.0,
                                       max_zoom=1.0, max_degrees=0.0, brightness=0.0, contrast=0.0))
    c.update(overrides)
    return c


def augment_fn(a: ml_collections.ConfigDict):
    """The training augmentation `(rng, images) -> images` that `a` describes, or None for none."""
    if not (a.flip or a.crop_padding or a.max_zoom > 1 or a.max_degrees or a.brightness or a.contrast):
        return None
    return functools.partial(augment.augment, flip=a.flip, crop_padding=a.crop_padding, pad_mode=a.pad_mode,
                             crop_probability=a.crop_probability, max_zoom=a.max_zoom, max_degrees=a.max_degrees,
                             brightness=a.brightness, contrast=a.contrast)


def tta_views(a: ml_collections.ConfigDict):
    """The test-time views, following the training augmentation: the mirror image (flips), 1-pixel shifts
    (padded crops; also without any augmentation) and a central zoom (zoom)."""
    shift_pixels = 1 if a.crop_padding or not (a.flip or a.max_zoom > 1) else 0
    return functools.partial(augment.tta_views, flip=a.flip, shift_pixels=shift_pixels, zoom=a.max_zoom,
                             pad_mode=a.pad_mode)


def save_preprocessing(workdir: str, image_size: int, channels: int, mean, std, class_names) -> None:
    """workdir/preprocessing.json: what a new image goes through before the model sees it."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, PREPROCESSING_FILE), "w") as f:
        json.dump({"image_size": int(image_size), "channels": int(channels), "mean": np.asarray(mean).tolist(),
                   "std": np.asarray(std).tolist(), "class_names": list(class_names)}, f, indent=2)


def load_preprocessing(workdir: str) -> dict:
    path = os.path.join(workdir, PREPROCESSING_FILE)
    if not os.path.exists(path):
        raise InputError(f"{path} does not exist: the run finished no training")
    with open(path) as f:
        saved = json.load(f)
    return {**saved, "mean": np.asarray(saved["mean"], np.float32), "std": np.asarray(saved["std"], np.float32)}


def list_image_files(input_path: str, file_column: str = "file") -> list[str]:
    """The images to predict: every image file under a folder (recursively, sorted), or the files named in a
    CSV's `file_column` (relative to the CSV's folder)."""
    if os.path.isdir(input_path):
        found = sorted(os.path.join(root, f) for root, _, files in os.walk(input_path) for f in files
                       if os.path.splitext(f)[1].lower() in images.IMAGE_EXTENSIONS)
        if not found:
            raise InputError(f"no image files under {input_path}")
        return found
    if not os.path.isfile(input_path):
        raise InputError(f"--input {input_path} is neither a folder nor a CSV file")
    with open(input_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if file_column not in (reader.fieldnames or []):
            raise InputError(f"{input_path} has no column {file_column!r} (its columns: "
                             f"{', '.join(reader.fieldnames or []) or 'none'})")
        names = [row[file_column].strip() for row in reader]
    return [os.path.join(os.path.dirname(input_path), name) for name in names if name]


def decode_for_prediction(paths: list[str], preprocessing: dict) -> tuple[np.ndarray, list[str], list[str]]:
    """(uint8 images of the readable files, their paths, one error line per unreadable file)."""
    decoded, good, bad = [], [], []
    for path in paths:
        try:
            decoded.append(images.decode_files([path], preprocessing["image_size"], preprocessing["channels"])[0])
            good.append(path)
        except InputError as e:
            bad.append(str(e))
    shape = (0, preprocessing["image_size"], preprocessing["image_size"], preprocessing["channels"])
    return (np.stack(decoded) if decoded else np.zeros(shape, np.uint8)), good, bad


def prediction_rows(paths: list[str], probabilities_NxK: np.ndarray, class_names, top_k: int = 3,
                    multi_label_thresholds=None) -> list[dict]:
    """One row per image: file, predicted class (or the space-separated classes above their thresholds,
    multi-label), its probability, and the top-k classes with probabilities when there are more than two."""
    k = min(top_k, len(class_names)) if len(class_names) > 2 else 0
    rows = []
    for path, p_K in zip(paths, probabilities_NxK):
        if multi_label_thresholds is not None:
            chosen = np.flatnonzero(p_K > np.asarray(multi_label_thresholds))
            row = {"file": path, "predicted": " ".join(class_names[i] for i in chosen),
                   "probability": " ".join(f"{p_K[i]:.4f}" for i in chosen)}
        else:
            row = {"file": path, "predicted": class_names[int(np.argmax(p_K))], "probability": f"{p_K.max():.4f}"}
        for rank, i in enumerate(np.argsort(-p_K)[:k]):
            row.update({f"top{rank + 1}": class_names[i], f"top{rank + 1}_probability": f"{p_K[i]:.4f}"})
        rows.append(row)
    return rows


def restore_for_prediction(workdir: str, model, preprocessing: dict, best_metric: str = "",
                           best_mode: str = "max"):
    """`model` with the weights of the run in `workdir` (its best checkpoint by `best_metric`, else its latest),
    for images of the saved `preprocessing`'s size; no optimizer."""
    size, channels = preprocessing["image_size"], preprocessing["channels"]
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0),
                                                                      jnp.zeros((1, size, size, channels)))
    return inference.restore_for_inference(workdir, model.apply, variables, best_metric, best_mode)


def predict_image_files(workdir: str, input_path: str, state_for: Callable[[dict], object], predict: Callable,
                        activation: Callable = jax.nn.softmax, views: Callable | None = None,
                        multi_label_thresholds=None, batch_size: int = 256) -> list[dict]:
    """Prediction rows (`prediction_rows`) for the image files under `input_path` (a folder, or a CSV with a
    `file` column), preprocessed as the run in `workdir` saved. `state_for(preprocessing)` gives the trained
    state (e.g. `inference.restore_for_inference`). Unreadable files: `inference.PartialPredictions` carrying
    the other rows and naming the first bad file."""
    saved = load_preprocessing(workdir)
    paths = list_image_files(input_path)
    images_N, good, bad = decode_for_prediction(paths, saved)
    probabilities = np.zeros((0, len(saved["class_names"])))
    if good:
        probabilities = predict_probabilities(predict, state_for(saved), images_N, batch_size, sharding.make_mesh(1),
                                              saved["mean"], saved["std"], views, activation=activation)
    rows = prediction_rows(good, probabilities, saved["class_names"], multi_label_thresholds=multi_label_thresholds)
    if bad:
        raise inference.PartialPredictions(f"{len(bad)} of {len(paths)} files could not be read (the other "
                                           f"predictions are written): {bad[0]}", rows)
    return rows


def predict_probabilities(predict: Callable, state, images_NxHxWxC: np.ndarray, batch_size: int, mesh: Mesh,
                          mean, std, views: Callable | None = None, beta: float | None = None,
                          activation: Callable = jax.nn.softmax) -> np.ndarray:
    """Class probabilities (N x K) of images: `activation` of `predict(state, images)`'s logits (softmax, or
    sigmoid for multi-label).

    With `views(images) -> [view, ...]` (e.g. `functools.partial(augment.tta_views, flip=True)`), test-time
    augmentation: beta * p(plain) + (1 - beta) * mean over the views; beta None weighs the plain image as one
    more view (`augment.average_views`)."""

    def probabilities(state, batch):
        images_BxHxWxC = normalise(batch["image"], mean, std)
        probabilities_fn = lambda x: activation(predict(state, x))
        views_ = views(images_BxHxWxC) if views else []
        return augment.average_views(probabilities_fn, images_BxHxWxC, views_, beta)

    return evaluation.predict_outputs(probabilities, state, {"image": images_NxHxWxC}, batch_size, mesh)
