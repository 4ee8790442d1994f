"""The tree baselines that a tabular net is measured against in the same run: scikit-learn's
HistGradientBoosting and RandomForest on the same split and the same preprocessed features (category indices,
normalised continuous columns and missing-value indicators), scored by the same metric sums as the net
(research/tabular/task.py).

Each baseline's hyperparameters are chosen on the validation rows from a small grid; the test rows, when there
are any, are scored once with the chosen model.
"""

import itertools
import time

import jax
import numpy as np
from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                              RandomForestClassifier, RandomForestRegressor)

from research.tabular import task as tabular_task

# HistGradientBoosting treats a column as categorical (splits on sets of categories) up to this many values.
MAX_NATIVE_CATEGORIES = 255

HIST_GRADIENT_BOOSTING_GRID = dict(learning_rate=(0.1,), max_leaf_nodes=(7, 15, 31))
RANDOM_FOREST_GRID = dict(min_samples_leaf=(1, 3, 10), max_features=(0.5, 1.0))


def features(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """N x (C + F): the category indices, then the normalised continuous columns."""
    return np.concatenate([arrays["cat"].astype(np.float64), arrays["cont"].astype(np.float64)], 1)


def score(kind: str, log_target: bool, outputs: np.ndarray, targets_N: np.ndarray, prefix: str) -> dict:
    """The net's metrics of a baseline's outputs (model-unit predictions, or class probabilities)."""
    mask_N = np.ones(len(targets_N), np.float32)
    if kind == "regression":
        summed = tabular_task.regression_sums(outputs, targets_N, mask_N, log_target)
        done = tabular_task.regression_finish(log_target)(jax.device_get(summed))
    else:
        log_probabilities = np.log(np.clip(outputs, 1e-7, 1.0))
        done = tabular_task.classification_finish(jax.device_get(
            tabular_task.classification_sums(log_probabilities, targets_N, mask_N)))
        if outputs.shape[1] == 2:
            done["auc"] = tabular_task.binary_auc(outputs, targets_N)
    return {prefix + k: float(v) for k, v in done.items()}


def _make(name: str, kind: str, hyperparameters: dict, categorical_N, seed: int):
    if name == "hist_gradient_boosting":
        model = HistGradientBoostingRegressor if kind == "regression" else HistGradientBoostingClassifier
        return model(max_iter=300, categorical_features=categorical_N, random_state=seed, **hyperparameters)
    model = RandomForestRegressor if kind == "regression" else RandomForestClassifier
    return model(n_estimators=200, n_jobs=-1, random_state=seed, **hyperparameters)


def _outputs(model, kind: str, x: np.ndarray) -> np.ndarray:
    return model.predict(x) if kind == "regression" else model.predict_proba(x)


def selection_metric(kind: str, log_target: bool) -> str:
    """What the grid minimises on validation: the percentage error for regression, log loss otherwise."""
    return "valid_" + (tabular_task.percentage_error_name(log_target) if kind == "regression" else "log_loss")


def fit_baselines(kind: str, log_target: bool, cardinalities, train: dict, valid: dict, test: dict | None = None,
                  seed: int = 0) -> dict[str, dict]:
    """{"hist_gradient_boosting": {...}, "random_forest": {...}}, each with its validation metrics (valid_*),
    the chosen hyperparameters, the seconds its grid took and, with `test`, its test metrics (test_*)."""
    x_train, x_valid = features(train), features(valid)
    num_cont = train["cont"].shape[1]
    categorical_N = np.array([n <= MAX_NATIVE_CATEGORIES for n in cardinalities] + [False] * num_cont)
    chosen_by = selection_metric(kind, log_target)
    results = {}
    for name, grid in (("hist_gradient_boosting", HIST_GRADIENT_BOOSTING_GRID), ("random_forest", RANDOM_FOREST_GRID)):
        started, best = time.time(), None
        for values in itertools.product(*grid.values()):
            hyperparameters = dict(zip(grid, values))
            model = _make(name, kind, hyperparameters, categorical_N, seed).fit(x_train, train["target"])
            scores = score(kind, log_target, _outputs(model, kind, x_valid), valid["target"], "valid_")
            if best is None or scores[chosen_by] < best[1][chosen_by]:
                best = (model, scores, hyperparameters)
        model, scores, hyperparameters = best
        if test is not None:
            scores.update(score(kind, log_target, _outputs(model, kind, features(test)), test["target"], "test_"))
        results[name] = {**scores, "hyperparameters": hyperparameters, "chosen_by": chosen_by,
                         "seconds": round(time.time() - started, 2)}
    return results
