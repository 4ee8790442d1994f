"""Masks for new images from a finished segmentation run: the preprocessing and mask colours the run saves beside
its checkpoints, and a mask PNG per image written with them."""

import json
import os

import jax
import numpy as np
import PIL.Image

from research.core import inference, sharding
from research.vision import masks, pipeline, segmentation, segmenter

CODES_FILE = "mask_codes.json"
BATCH_SIZE = 64


def save_preprocessing(workdir: str, data: masks.MaskData) -> None:
    """preprocessing.json (research/vision/pipeline.py) and the masks' colours (mask_codes.json)."""
    images = data.train.images
    pipeline.save_preprocessing(workdir, images.shape[1], images.shape[-1], data.mean, data.std, data.class_names)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, CODES_FILE), "w") as f:
            json.dump({"colours": data.colours}, f)


def restore_model(config, workdir: str, saved: dict):
    """The run's trained state for inference: its best checkpoint by `config.checkpoint.best_metric` from
    scratch, the last SGDR cycle's (finetune/) when fine-tuned."""
    model = segmenter.make_model(config, len(saved["class_names"]))
    if config.weights:
        return pipeline.restore_for_prediction(os.path.join(workdir, "finetune"), model, saved)
    return pipeline.restore_for_prediction(workdir, model, saved, config.checkpoint.best_metric,
                                           config.checkpoint.best_mode)


def read_images(paths: list[str], size: int, channels: int) -> tuple[list[np.ndarray], list[tuple], list[str],
                                                                     list[str]]:
    """(the readable images resized as in training, their own sizes, their paths, one error line per
    unreadable file)."""
    arrays, sizes, good, bad = [], [], [], []
    for path in paths:
        try:
            with PIL.Image.open(path) as image:
                arrays.append(masks.resize_pair(image, np.zeros((1, 1), np.uint8), size, channels)[0])
                sizes.append(image.size)
                good.append(path)
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds of errors for bad files
            bad.append(f"cannot read image {path}: {type(e).__name__}: {e}")
    return arrays, sizes, good, bad


def predict(config, workdir: str, input_path: str, output_dir: str) -> list[dict]:
    """A mask PNG per image under `input_path` (a folder, or a CSV with a `file` column), named by the image's
    stem, in `output_dir`, at the image's own size: class indices (grayscale), or codes.txt's colours when the
    training masks had them. Returns a row per mask (file, mask, width, height); unreadable files raise
    PartialPredictions with the others' rows after their masks are written."""
    saved = pipeline.load_preprocessing(workdir)
    with open(os.path.join(workdir, CODES_FILE)) as f:
        colours = json.load(f)["colours"]
    paths = pipeline.list_image_files(input_path)
    arrays, sizes, good, bad = read_images(paths, saved["image_size"], saved["channels"])
    os.makedirs(output_dir, exist_ok=True)
    rows = []
    if good:
        predicted = segmentation.predicted_masks(restore_model(config, workdir, saved), np.stack(arrays),
                                                 saved["mean"], saved["std"], BATCH_SIZE, sharding.make_mesh(1),
                                                 config.tta)
        for path, mask, (width, height) in zip(good, predicted, sizes):
            mask_image = PIL.Image.fromarray(mask).resize((width, height), PIL.Image.Resampling.NEAREST)
            if colours:
                mask_image = PIL.Image.fromarray(np.asarray(colours, np.uint8)[np.asarray(mask_image)])
            mask_path = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
            mask_image.save(mask_path)
            rows.append({"file": path, "mask": mask_path, "width": width, "height": height})
    if bad:
        raise inference.PartialPredictions(f"{len(bad)} of {len(paths)} files could not be read (the other masks "
                                           f"are in {output_dir}): {bad[0]}", rows)
    return rows
