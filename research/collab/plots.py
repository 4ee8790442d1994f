"""Interpretation plots of a collaborative-filtering model: items ranked by learned bias, and item factors on
their first two principal components."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def principal_components(matrix_NxD: np.ndarray, num: int = 2) -> np.ndarray:
    """N x num coordinates of the rows on their first `num` principal components (centred, by SVD)."""
    centred = matrix_NxD - matrix_NxD.mean(0)
    _, _, components_DxD = np.linalg.svd(centred, full_matrices=False)
    return centred @ components_DxD[:num].T


def plot_item_biases(path: str, biases_N: np.ndarray, titles, top: int = 15) -> None:
    """The `top` items with the lowest and the highest learned bias (the rating the item gets whoever rates it)."""
    order = np.argsort(biases_N, kind="stable")
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.32 * top + 1.2))
    for ax, picked, name in ((axes[0], order[:top], "lowest"), (axes[1], order[::-1][:top], "highest")):
        ax.barh(range(len(picked)), biases_N[picked], color="tab:red" if name == "lowest" else "tab:green")
        ax.set_yticks(range(len(picked)), [titles[k][:40] for k in picked], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{name} item bias")
        ax.set_xlabel("learned bias")
    _save(fig, path)


def plot_item_factors(path: str, factors_NxF: np.ndarray, titles, num_labels: int = 50) -> None:
    """Every item on the first two principal components of the factors, the first `num_labels` labelled."""
    coords_Nx2 = principal_components(factors_NxF)
    fig, ax = plt.subplots(figsize=(12, 10))
    ax.scatter(coords_Nx2[:, 0], coords_Nx2[:, 1], s=4, alpha=0.3, color="tab:gray")
    for k in range(min(num_labels, len(titles))):
        ax.scatter(coords_Nx2[k, 0], coords_Nx2[k, 1], s=10, color="tab:blue")
        ax.annotate(titles[k][:30], coords_Nx2[k], fontsize=7)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title("item factors (labelled: the most-rated items)")
    _save(fig, path)


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
