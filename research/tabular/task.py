"""Tasks on table rows, batches {"cat": B x C int, "cont": B x F float, "target": B}.

Regression: mean squared error in model units (the log of the target with `log_target`, as the course trained
Rossmann), reported in the target's original units: RMSE, MAE and the root mean squared percentage error
(Rossmann's metric; "exp_rmspe" when the model predicts logs, since it is taken after exp(prediction), else
"rmspe"). Rows whose target is 0 have no percentage error and are left out of it, as Rossmann's scoring did.

Classification (binary and multi-class): softmax cross-entropy; accuracy and log loss. AUC (binary) needs all
scores at once, not sums: `binary_auc` computes it on the host from predicted probabilities.

Metrics are sums with a count (research/core/steps.py); `finish` turns them into the numbers above. The same
sums score the tree baselines' predictions, so every number in results.json is computed by one function.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.core import steps


def inputs(batch: dict) -> tuple:
    return batch["cat"], batch["cont"]


# --- regression ------------------------------------------------------------------------------------------------

def percentage_error_name(log_target: bool) -> str:
    return "exp_rmspe" if log_target else "rmspe"


def regression_sums(predictions_B, targets_B, mask_B, log_target: bool) -> dict[str, jax.Array]:
    """Summed errors in model units (`loss`) and original units (squared, absolute, squared percentage)."""
    mask_B = jnp.asarray(mask_B, jnp.float32)
    predictions_B = jnp.reshape(jnp.asarray(predictions_B, jnp.float32), (-1,))
    targets_B = jnp.asarray(targets_B, jnp.float32)
    predicted_B, actual_B = ((jnp.exp(predictions_B), jnp.exp(targets_B)) if log_target
                             else (predictions_B, targets_B))
    error_B = predicted_B - actual_B
    has_percentage_B = mask_B * (actual_B != 0)
    percentage_B = jnp.where(actual_B != 0, error_B / jnp.where(actual_B != 0, actual_B, 1.0), 0.0)
    return {"loss": jnp.sum((predictions_B - targets_B) ** 2 * mask_B),
            "squared_error": jnp.sum(error_B ** 2 * mask_B), "abs_error": jnp.sum(jnp.abs(error_B) * mask_B),
            "squared_percentage_error": jnp.sum(percentage_B ** 2 * has_percentage_B),
            "percentage_count": jnp.sum(has_percentage_B), "count": jnp.sum(mask_B)}


def regression_finish(log_target: bool):
    """sums -> {"loss" (model-unit MSE), "rmse", "mae", "exp_rmspe" or "rmspe", and any other summed means}."""

    def finish(summed: dict) -> dict[str, float]:
        count = float(summed["count"])
        sums = ("loss", "squared_error", "abs_error", "squared_percentage_error", "percentage_count")
        done = {k: v for k, v in steps.means(summed).items() if k not in sums}
        done["loss"] = float(summed["loss"]) / count
        done["rmse"] = float(np.sqrt(float(summed["squared_error"]) / count))
        done["mae"] = float(summed["abs_error"]) / count
        done[percentage_error_name(log_target)] = float(
            np.sqrt(float(summed["squared_percentage_error"]) / max(float(summed["percentage_count"]), 1.0)))
        return done

    return finish


def regression_task(log_target: bool) -> steps.Task:
    return steps.Task(
        inputs=inputs,
        loss=lambda predictions, batch: jnp.mean((jnp.reshape(predictions, (-1,)) - batch["target"]) ** 2),
        metrics=lambda predictions, batch, mask_B: regression_sums(predictions, batch["target"], mask_B, log_target),
        finish=regression_finish(log_target))


def rmspe(predicted_N: np.ndarray, actual_N: np.ndarray) -> float:
    """Root mean squared percentage error in plain numpy, over the rows with a non-zero actual value."""
    keep = actual_N != 0
    return float(np.sqrt(np.mean(((actual_N[keep] - predicted_N[keep]) / actual_N[keep]) ** 2)))


# --- classification --------------------------------------------------------------------------------------------

def classification_sums(logits_BxK, labels_B, mask_B) -> dict[str, jax.Array]:
    """Summed log loss and accuracy. `logits_BxK` may also be log-probabilities (a baseline's)."""
    mask_B = jnp.asarray(mask_B, jnp.float32)
    log_probabilities_BxK = jax.nn.log_softmax(jnp.asarray(logits_BxK, jnp.float32), -1)
    labels_B = jnp.asarray(labels_B, jnp.int32)
    loss_B = -jnp.take_along_axis(log_probabilities_BxK, labels_B[:, None], -1)[:, 0]
    correct_B = (jnp.argmax(log_probabilities_BxK, -1) == labels_B).astype(jnp.float32)
    return {"loss": jnp.sum(loss_B * mask_B), "accuracy": jnp.sum(correct_B * mask_B), "count": jnp.sum(mask_B)}


def classification_finish(summed: dict) -> dict[str, float]:
    """sums -> {"loss" (the training loss), "log_loss" (the same, by its usual name), "accuracy"}."""
    done = steps.means(summed)
    return {**done, "log_loss": done["loss"]}


def smoothed_cross_entropy(logits_BxK, labels_B, label_smoothing: float) -> jax.Array:
    """The mean cross-entropy against targets with `label_smoothing` of the mass spread evenly over the classes
    (Szegedy et al. 2016); 0 is the plain log loss."""
    num_classes = logits_BxK.shape[-1]
    targets_BxK = optax.smooth_labels(jax.nn.one_hot(labels_B, num_classes), label_smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits_BxK.astype(jnp.float32), targets_BxK))


def classification_task(label_smoothing: float = 0.0) -> steps.Task:
    """Trained on the (smoothed) cross-entropy; scored by the plain log loss and accuracy."""
    return steps.Task(
        inputs=inputs,
        loss=lambda logits, batch: smoothed_cross_entropy(logits, batch["target"], label_smoothing),
        metrics=lambda logits, batch, mask_B: classification_sums(logits, batch["target"], mask_B),
        finish=classification_finish)


def binary_auc(probabilities_NxK: np.ndarray, labels_N: np.ndarray) -> float:
    """Area under the ROC curve of class 1's probability (scikit-learn, on the host)."""
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(labels_N, probabilities_NxK[:, 1]))


def task(kind: str, log_target: bool = False, label_smoothing: float = 0.0) -> steps.Task:
    """The task for `kind` ("regression" or "classification"; `label_smoothing` in its training loss)."""
    return regression_task(log_target) if kind == "regression" else classification_task(label_smoothing)
