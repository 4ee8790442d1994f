"""Regression of one number per example (table rows, user-item ratings): mean squared error; RMSE and MAE
finished from sums over the whole evaluation set.

Batches hold the model's inputs under `input_keys` and the target under "target" (float, B). The model returns
B or B x 1 predictions (already in the target's units, e.g. through a scaled sigmoid `y_range`).
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.core import steps


def _flat(predictions) -> jax.Array:
    return predictions.reshape(predictions.shape[0])


def summed_metrics(predictions_B, targets_B, mask_B) -> dict[str, jax.Array]:
    """Sums of the squared and absolute errors; the squared error also as "loss" (the training loss, which the
    trainer logs and its progress bar shows)."""
    mask_B = mask_B.astype(jnp.float32)
    error_B = _flat(predictions_B) - targets_B
    squared_error = jnp.sum(error_B ** 2 * mask_B)
    return {"loss": squared_error, "squared_error": squared_error,
            "abs_error": jnp.sum(jnp.abs(error_B) * mask_B), "count": jnp.sum(mask_B)}


def finish(summed: dict) -> dict[str, float]:
    """{"loss" (= "mse"), "mse", "rmse", "mae"} (and the means of any other summed metric) from the sums."""
    done = {k: v for k, v in steps.means(summed).items() if k not in ("squared_error", "abs_error")}
    mse = float(summed["squared_error"]) / float(summed["count"])
    return {**done, "mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(summed["abs_error"]) / float(summed["count"])}


def task(input_keys: Sequence[str]) -> steps.Task:
    keys = tuple(input_keys)
    return steps.Task(
        inputs=lambda batch: tuple(batch[k] for k in keys),
        loss=lambda predictions, batch: jnp.mean((_flat(predictions) - batch["target"]) ** 2),
        metrics=lambda predictions, batch, mask_B: summed_metrics(predictions, batch["target"], mask_B),
        finish=finish)
