"""Interpreting a tabular net: permutation importance of each input column (the ML course's favourite plot) and a
2-D PCA projection of an embedding's rows, labelled with their categories. PNGs via matplotlib's Agg backend."""

import os
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def permutation_importance(score: Callable[[dict], float], arrays: dict[str, np.ndarray], cat_names, cont_names,
                           seed: int = 0) -> dict[str, float]:
    """{column: score(rows with that column shuffled) - score(rows)}, for a score where lower is better (an
    error): how much worse the model gets without the column's information. Columns ordered most important
    first."""
    rng = np.random.default_rng(seed)
    base = score(arrays)
    importances = {}
    for key, names in (("cat", cat_names), ("cont", cont_names)):
        for j, name in enumerate(names):
            shuffled = arrays[key].copy()
            shuffled[:, j] = shuffled[rng.permutation(len(shuffled)), j]
            importances[name] = score({**arrays, key: shuffled}) - base
    return dict(sorted(importances.items(), key=lambda item: -item[1]))


def plot_importance(path: str, importances: dict[str, float], metric: str) -> None:
    names, values = list(importances)[::-1], list(importances.values())[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1.5))
    ax.barh(names, values, color=["C0" if v >= 0 else "C3" for v in values])
    ax.set_xlabel(f"increase in validation {metric} when the column is shuffled")
    ax.set_title("permutation importance")
    _save(fig, path)


def pca_2d(matrix_NxD: np.ndarray) -> np.ndarray:
    """N x 2: the rows projected onto their first two principal components."""
    centred = matrix_NxD - matrix_NxD.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    points = centred @ vt[:2].T
    return np.pad(points, [(0, 0), (0, 2 - points.shape[1])])


def plot_embedding(path: str, embedding_NxD: np.ndarray, labels, column: str) -> None:
    """The embedding's rows (the unknown row 0 left out) on their first two principal components, labelled."""
    points = pca_2d(embedding_NxD[1:])
    fig, ax = plt.subplots(figsize=(9, 7))
    ax.scatter(points[:, 0], points[:, 1], s=12)
    for (x, y), label in zip(points, labels):
        ax.annotate(str(label), (x, y), fontsize=7, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(f"embedding of {column!r} ({len(labels)} categories, width {embedding_NxD.shape[1]}), PCA")
    _save(fig, path)


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def interpret_net(workdir: str, score: Callable[[dict], float], metric: str, valid: dict[str, np.ndarray],
                  prep, params) -> dict[str, float]:
    """permutation_importance.png (each input column of the `valid` rows shuffled, `score` lower is better) and
    embedding_pca.png (the largest embedding of `params` on 2 principal components, its categories as labels).
    `prep` is the run's Preprocessing. Returns the importances, rounded."""
    importance = permutation_importance(score, valid, prep.cat_names, prep.cont_names)
    plot_importance(os.path.join(workdir, "permutation_importance.png"), importance, metric)
    if prep.categories:
        largest = int(np.argmax([len(v) for v in prep.categories.values()]))
        column = list(prep.categories)[largest]
        table = np.asarray(params[f"embedding_{largest}"]["embedding"])
        plot_embedding(os.path.join(workdir, "embedding_pca.png"), table, prep.categories[column], column)
    return {k: round(float(v), 5) for k, v in importance.items()}
