"""Top-N recommendations from a trained collaborative-filtering run (research/collab/recipe.py's workdir): for
each user, the items they did not rate in training, best predicted rating first. Users unseen in training get
the average user's ranking."""

import os

import jax
import ml_collections
import numpy as np
import pandas as pd

from research.collab import ratings, recipe
from research.core import evaluation, inference, sharding, steps
from research.core.errors import InputError


def recommend(scores_UxI: np.ndarray, rated_U: list[set[int]], top_n: int) -> np.ndarray:
    """U x top_n item indices by score, excluding each user's rated items and the unseen-item index 0."""
    scores = scores_UxI.copy()
    scores[:, 0] = -np.inf
    for row, rated in enumerate(rated_U):
        scores[row, list(rated)] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :top_n]


def read_user_ids(path: str, column: str) -> list[str]:
    """The distinct user ids of the CSV at `path`, in order, from `column` (else a `user` column)."""
    if not os.path.exists(path):
        raise InputError(f"{path} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    found = column if column in table.columns else "user"
    if found not in table.columns:
        raise InputError(f"{path} has no column {column!r} (columns: {', '.join(table.columns)})")
    return list(dict.fromkeys(table[found]))


def predicted_ratings(config, workdir: str, maps: ratings.IndexMaps, users_U: np.ndarray) -> np.ndarray:
    """U x I predicted ratings of the run: bayes's saved posterior ratings, else the restored model's."""
    if config.model.kind == "bayes":
        return np.load(os.path.join(workdir, recipe.SCORES_FILE))[users_U]
    model = recipe.make_model(config, maps)
    state = inference.restore_for_inference(workdir, model.apply, recipe.init_fn(model)(jax.random.key(config.seed)),
                                            config.checkpoint.best_metric, config.checkpoint.best_mode)
    items_I = np.arange(maps.num_items, dtype=np.int32)
    arrays = {"user": np.repeat(users_U, maps.num_items), "item": np.tile(items_I, len(users_U))}
    scores = evaluation.predict_outputs(steps.make_predict(recipe.TASK), state, arrays, config.eval_batch_size,
                                        sharding.make_mesh(1))
    return scores.reshape(len(users_U), maps.num_items)


def predict(config: ml_collections.ConfigDict, workdir: str, input_path: str) -> list[dict]:
    """Top-`config.top_n` recommendations for every user in the CSV `input_path` (column `config.data.user` or
    `user`), with titles where known: rows of user, rank, item, title, predicted_rating."""
    maps = ratings.IndexMaps.load(os.path.join(workdir, recipe.INDEX_MAPS_FILE))
    user_ids = read_user_ids(input_path, config.data.user)
    users_U = maps.user_index(user_ids)
    pairs = np.load(os.path.join(workdir, recipe.TRAIN_PAIRS_FILE))
    rated_U = [set(pairs["item"][pairs["user"] == u]) if u else set() for u in users_U]
    scores_UxI = predicted_ratings(config, workdir, maps, users_U)
    top_UxN = recommend(scores_UxI, rated_U, config.top_n)
    rows = []
    for row, user in enumerate(user_ids):
        for rank, item in enumerate(top_UxN[row], 1):
            item_id = maps.items[item - 1]
            rows.append({"user": user, "rank": rank, "item": item_id, "title": maps.titles.get(item_id, ""),
                         "predicted_rating": round(float(scores_UxI[row, item]), 4)})
    return rows
