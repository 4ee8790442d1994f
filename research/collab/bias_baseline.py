"""The collaborative-filtering baseline: a rating is the global mean plus a user bias plus an item bias,

    r_ui ~ mu + b_u + b_i,  minimising  sum (r_ui - mu - b_u - b_i)^2 + lambda_user |b_u|^2 + lambda_item |b_i|^2

with mu the training mean, solved by alternating least squares: with the user biases fixed each item bias has
the closed form b_i = sum_u (r_ui - mu - b_u) / (lambda_item + n_i), and the other way round. The problem is
convex, so alternating converges to its unique minimum. Users and items unseen in training (index 0) get no
bias: the global-mean path.
"""

import itertools
from typing import NamedTuple, Sequence

import numpy as np

from research.collab import splits


class Biases(NamedTuple):
    mean: float
    user_U: np.ndarray  # index 0 (unseen) is 0
    item_I: np.ndarray

    def predict(self, users_N: np.ndarray, items_N: np.ndarray, low: float = -np.inf,
                high: float = np.inf) -> np.ndarray:
        return np.clip(self.mean + self.user_U[users_N] + self.item_I[items_N], low, high)


def fit(users_N: np.ndarray, items_N: np.ndarray, ratings_N: np.ndarray, num_users: int, num_items: int,
        lambda_user: float = 10.0, lambda_item: float = 10.0, num_sweeps: int = 30) -> Biases:
    """Regularised user and item biases by `num_sweeps` alternating closed-form solves (items, then users)."""
    ratings_N = np.asarray(ratings_N, np.float64)
    mean = float(ratings_N.mean())
    residual_N = ratings_N - mean
    count_users = np.bincount(users_N, minlength=num_users)
    count_items = np.bincount(items_N, minlength=num_items)
    user_U, item_I = np.zeros(num_users), np.zeros(num_items)
    for _ in range(num_sweeps):
        item_I = _ratio(np.bincount(items_N, residual_N - user_U[users_N], num_items), lambda_item + count_items)
        user_U = _ratio(np.bincount(users_N, residual_N - item_I[items_N], num_users), lambda_user + count_users)
    user_U[0], item_I[0] = 0.0, 0.0
    return Biases(mean, user_U, item_I)


def _ratio(sums: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    """sums / denominators, 0 where nothing was rated and lambda is 0."""
    return np.divide(sums, denominators, out=np.zeros_like(sums), where=denominators > 0)


def rmse(biases: Biases, arrays: dict, low: float = -np.inf, high: float = np.inf) -> float:
    errors_N = biases.predict(arrays["user"], arrays["item"], low, high) - arrays["target"]
    return float(np.sqrt(np.mean(errors_N ** 2)))


def choose_lambdas(train: dict, valid: dict, num_users: int, num_items: int, low: float = -np.inf,
                   high: float = np.inf, grid: Sequence[float] = (0.0, 1.0, 2.0, 5.0, 10.0, 15.0, 25.0, 50.0),
                   ) -> tuple[float, float, float]:
    """(lambda_user, lambda_item, valid RMSE) of the grid pair with the lowest RMSE on `valid` (predictions
    clipped to [low, high])."""
    scores = []
    for lambda_user, lambda_item in itertools.product(grid, grid):
        biases = fit(train["user"], train["item"], train["target"], num_users, num_items, lambda_user, lambda_item)
        scores.append((rmse(biases, valid, low, high), lambda_user, lambda_item))
    best, lambda_user, lambda_item = min(scores)
    return lambda_user, lambda_item, best


def chosen_on_holdout(train: dict, valid: dict, num_users: int, num_items: int, seed: int, low: float = -np.inf,
                      high: float = np.inf) -> dict:
    """The baseline as the experiments report it: lambdas chosen on a random 10% holdout of the training ratings
    (`seed`), refitted on all of them, scored on `valid` (predictions clipped to [low, high])."""
    inner = splits.random_split(len(train["target"]), 0.1, seed)
    part = lambda k: {name: array[inner == k] for name, array in train.items()}
    lambda_user, lambda_item, holdout_rmse = choose_lambdas(part(0), part(1), num_users, num_items, low, high)
    biases = fit(train["user"], train["item"], train["target"], num_users, num_items, lambda_user, lambda_item)
    return {"valid_rmse": rmse(biases, valid, low, high), "lambda_user": lambda_user, "lambda_item": lambda_item,
            "holdout_rmse": holdout_rmse}
