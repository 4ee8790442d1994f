"""Semantic segmentation: per-pixel softmax cross-entropy, soft dice, or their sum; pixel accuracy, per-class
IoU, mean IoU and foreground dice as exact sums over a whole evaluation set.

Batches are {"image": B x H x W x C, "pixel_labels": B x H x W class indices (the mask; "mask" is the
evaluation batches' row mask)}; the model returns B x H x W x K logits.
Pixels whose mask equals `ignore_index` ("void": the pets trimaps' borders, CamVid's void) count nowhere: not in
the loss, not in any metric. The metrics' `count` is the number of counted pixels, so a plain mean of a summed
metric (the cross-entropy, pixel accuracy) is per pixel; `finish` turns the per-class sums into IoU and dice.

IoU of class k = |predicted k and true k| / |predicted k or true k| over all counted pixels of the set. A class
that is neither present nor predicted anywhere has no IoU (NaN in `iou_per_class`) and is left out of the mean
IoU. Foreground dice is the dice of "any class but `background`" against the background, over the set.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.core import evaluation, steps
from research.vision.image_arrays import image_prepare

IGNORE_INDEX = 255  # the "void" label: fits uint8 masks, and no dataset here has 256 classes
DICE_SMOOTH = 1.0


def _valid_and_one_hot(mask_BxHxW, num_classes: int, ignore_index: int):
    valid_BxHxW = (mask_BxHxW != ignore_index).astype(jnp.float32)
    one_hot_BxHxWxK = jax.nn.one_hot(jnp.where(mask_BxHxW == ignore_index, 0, mask_BxHxW), num_classes)
    return valid_BxHxW, one_hot_BxHxWxK * valid_BxHxW[..., None]


def pixel_cross_entropy(logits_BxHxWxK, mask_BxHxW, ignore_index: int = IGNORE_INDEX) -> jax.Array:
    """Mean softmax cross-entropy over the pixels that are not void (0 if every pixel is void)."""
    valid, one_hot = _valid_and_one_hot(mask_BxHxW, logits_BxHxWxK.shape[-1], ignore_index)
    loss_BxHxW = optax.softmax_cross_entropy(logits_BxHxWxK, one_hot)
    return jnp.sum(loss_BxHxW * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def soft_dice_loss(logits_BxHxWxK, mask_BxHxW, ignore_index: int = IGNORE_INDEX,
                   smooth: float = DICE_SMOOTH) -> jax.Array:
    """1 - the mean over classes of the soft dice (2 sum(p y) + s) / (sum(p) + sum(y) + s) over the batch's
    non-void pixels, p the softmax probabilities: a class absent from the batch and not predicted scores 1."""
    valid, one_hot = _valid_and_one_hot(mask_BxHxW, logits_BxHxWxK.shape[-1], ignore_index)
    probabilities = jax.nn.softmax(logits_BxHxWxK) * valid[..., None]
    intersection_K = jnp.sum(probabilities * one_hot, axis=(0, 1, 2))
    total_K = jnp.sum(probabilities, axis=(0, 1, 2)) + jnp.sum(one_hot, axis=(0, 1, 2))
    return 1.0 - jnp.mean((2.0 * intersection_K + smooth) / (total_K + smooth))


def cross_entropy_and_dice(logits_BxHxWxK, mask_BxHxW, ignore_index: int = IGNORE_INDEX) -> jax.Array:
    """Cross-entropy + soft dice loss: the first trains every pixel, the second weighs small classes up."""
    return (pixel_cross_entropy(logits_BxHxWxK, mask_BxHxW, ignore_index)
            + soft_dice_loss(logits_BxHxWxK, mask_BxHxW, ignore_index))


LossFn = Callable[[jax.Array, jax.Array, int], jax.Array]


def summed_metrics(logits_BxHxWxK, mask_BxHxW, mask_B, ignore_index: int = IGNORE_INDEX, background: int = 0,
                   per_class: bool = True) -> dict[str, jax.Array]:
    """Sums over the non-void pixels of the rows where mask_B: cross-entropy ("loss"), correct pixels
    ("accuracy"), foreground pixels predicted / true / both, and with `per_class` the K-vectors
    "intersection" and "union"; "count" is the number of those pixels."""
    num_classes = logits_BxHxWxK.shape[-1]
    valid, one_hot = _valid_and_one_hot(mask_BxHxW, num_classes, ignore_index)
    valid = valid * mask_B.astype(jnp.float32)[:, None, None]
    predicted_BxHxW = jnp.argmax(logits_BxHxWxK, -1)
    true_BxHxW = jnp.where(mask_BxHxW == ignore_index, 0, mask_BxHxW)
    loss_BxHxW = optax.softmax_cross_entropy(logits_BxHxWxK, one_hot)
    predicted_fg, true_fg = (predicted_BxHxW != background) * valid, (true_BxHxW != background) * valid
    sums = {"loss": jnp.sum(loss_BxHxW * valid),
            "accuracy": jnp.sum((predicted_BxHxW == true_BxHxW) * valid),
            "foreground_predicted": jnp.sum(predicted_fg), "foreground_true": jnp.sum(true_fg),
            "foreground_both": jnp.sum(predicted_fg * true_fg), "count": jnp.sum(valid)}
    if per_class:
        predicted_BxHxWxK = jax.nn.one_hot(predicted_BxHxW, num_classes) * valid[..., None]
        true_BxHxWxK = jax.nn.one_hot(true_BxHxW, num_classes) * valid[..., None]
        sums["intersection"] = jnp.sum(predicted_BxHxWxK * true_BxHxWxK, axis=(0, 1, 2))
        sums["union"] = jnp.sum(jnp.maximum(predicted_BxHxWxK, true_BxHxWxK), axis=(0, 1, 2))
    return sums


def iou_per_class(intersection_K, union_K) -> np.ndarray:
    """IoU of each class; NaN for a class with an empty union (neither present nor predicted)."""
    intersection_K, union_K = np.asarray(intersection_K, np.float64), np.asarray(union_K, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union_K > 0, intersection_K / union_K, np.nan)


def finish(summed: dict) -> dict[str, float]:
    """Final numbers from sums over a whole set: loss (cross-entropy per pixel), pixel accuracy, foreground
    dice, and with the per-class sums mean IoU (over the classes with a non-empty union) and `iou_{k}` per
    class (NaN: empty class)."""
    count = max(float(summed["count"]), 1.0)
    both, predicted, true = (float(summed[k]) for k in ("foreground_both", "foreground_predicted",
                                                        "foreground_true"))
    done = {"loss": float(summed["loss"]) / count, "pixel_accuracy": float(summed["accuracy"]) / count,
            "foreground_dice": 2.0 * both / (predicted + true) if predicted + true else float("nan")}
    done.update({k: float(v) / count for k, v in summed.items()
                 if k not in ("loss", "accuracy", "count", "intersection", "union") and not k.startswith("foreground")})
    if "intersection" in summed:
        iou_K = iou_per_class(summed["intersection"], summed["union"])
        done["mean_iou"] = float(np.nanmean(iou_K)) if np.any(np.isfinite(iou_K)) else float("nan")
        done.update({f"iou_{k}": float(v) for k, v in enumerate(iou_K)})
    return done


def task(loss_fn: LossFn = cross_entropy_and_dice, ignore_index: int = IGNORE_INDEX, background: int = 0,
         per_class: bool = True) -> steps.Task:
    """The segmentation task for `tasks/steps.py`. Training steps need no per-class sums (`per_class=False`:
    the trainer logs scalar means); evaluation does."""
    return steps.Task(
        inputs=lambda batch: (batch["image"],),
        loss=lambda logits, batch: loss_fn(logits, batch["pixel_labels"].astype(jnp.int32), ignore_index),
        metrics=lambda logits, batch, mask_B: summed_metrics(logits, batch["pixel_labels"].astype(jnp.int32), mask_B,
                                                             ignore_index, background, per_class),
        finish=finish)


def make_train_step(loss_fn: LossFn = cross_entropy_and_dice, ignore_index: int = IGNORE_INDEX,
                    background: int = 0):
    """`train_step(state, batch, rng) -> (state, metrics)` for batches {"image", "pixel_labels"}."""
    return steps.make_train_step(task(loss_fn, ignore_index, background, per_class=False))


def make_eval_step(ignore_index: int = IGNORE_INDEX, background: int = 0, flip_tta: bool = False):
    """`eval_step(state, batch) -> sums` with the per-class sums; `finish` them over the whole set. flip_tta:
    scored on `predict_flip_tta`'s averaged probabilities (their log as the logits)."""
    return steps.make_eval_step(task(ignore_index=ignore_index, background=background),
                                predict_flip_tta if flip_tta else None)


predict = steps.make_predict(task())  # logits B x H x W x K in eval mode


def predict_flip_tta(state, batch: dict) -> jax.Array:
    """Test-time augmentation for masks: the log of the mean softmax of the image and of its mirror image, the
    mirror's prediction mirrored back onto the image's pixels (B x H x W x K)."""
    images_BxHxWxC = batch["image"]
    both = predict(state, {**batch, "image": jnp.concatenate([images_BxHxWxC, images_BxHxWxC[:, :, ::-1]])})
    plain_BxHxWxK, mirrored_BxHxWxK = jnp.split(jax.nn.softmax(both), 2)
    return jnp.log((plain_BxHxWxK + mirrored_BxHxWxK[:, :, ::-1]) / 2)


def predicted_masks(state, images_NxHxWxC: np.ndarray, mean, std, batch_size: int, mesh,
                    tta: bool = False) -> np.ndarray:
    """Class indices N x H x W (uint8) of the model's per-pixel argmax (of the flip-averaged probabilities with
    `tta`) for uint8 images, normalised with `mean` and `std`."""
    logits = predict_flip_tta if tta else predict
    classes = lambda state, batch: jnp.argmax(logits(state, batch), -1).astype(jnp.uint8)
    return evaluation.predict_outputs(classes, state, {"image": images_NxHxWxC}, batch_size, mesh,
                                      image_prepare(mean, std))


def per_image_iou(predicted_NxHxW: np.ndarray, true_NxHxW: np.ndarray, num_classes: int,
                  ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Each image's mean IoU over the classes present in it or predicted in it (for best / worst examples)."""
    valid = true_NxHxW != ignore_index
    scores = np.zeros(len(true_NxHxW))
    for n in range(len(true_NxHxW)):
        p, t = predicted_NxHxW[n][valid[n]], true_NxHxW[n][valid[n]]
        intersection = np.bincount(t[p == t], minlength=num_classes)
        union = np.bincount(p, minlength=num_classes) + np.bincount(t, minlength=num_classes) - intersection
        scores[n] = np.mean(intersection[union > 0] / union[union > 0]) if np.any(union > 0) else np.nan
    return scores
