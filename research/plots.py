"""PNG plots: learning-rate range test, confusion matrix, top losses. Matplotlib's Agg backend (no display)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from research import lr_finder  # noqa: E402


def lr_find(path: str, result, xlabel: str | None = None) -> None:
    """Loss against the swept value (log axis), the smoothed curve, a band across seeds, suggestions marked."""
    values, smoothed = result.values, result.smoothed_losses
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if result.losses_per_seed is not None:
        ax.fill_between(values, result.losses_per_seed.min(0), result.losses_per_seed.max(0), color="C0",
                        alpha=0.15, label=f"range over {len(result.losses_per_seed)} seeds")
    ax.plot(values, result.losses, color="0.6", linewidth=1, label="loss" if result.losses_per_seed is None
            else "mean loss")
    ax.plot(values, smoothed, color="C0", linewidth=2, label="smoothed loss (EMA 0.98)")
    finite = np.isfinite(result.losses)
    ax.plot(values[finite], lr_finder.suggestion_curve(values[finite], result.losses[finite]), color="k",
            linewidth=1, linestyle=":", label="curve read by the suggestions")
    for i, (name, value) in enumerate(result.suggestions.items()):
        ax.axvline(value, color=f"C{i + 1}", linestyle="--", label=f"{name}: {value:.2e}")
    shown = result.losses[finite]
    if len(shown):
        low, start = np.min(shown), np.median(shown[:5])
        ax.set_ylim(low - 0.1 * abs(low), max(start, low) * 1.5)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel or result.hyperparam.replace("_", " "))
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix(labels_N: np.ndarray, predictions_N: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[actual, predicted]."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels_N, predictions_N), 1)
    return counts


def plot_confusion_matrix(path: str, counts_KxK: np.ndarray, class_names) -> None:
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(counts_KxK, cmap="Blues")
    for (i, j), count in np.ndenumerate(counts_KxK):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > counts_KxK.max() / 2 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def top_losses(probabilities_NxK: np.ndarray, labels_N: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and losses (cross-entropy) of the k examples with the highest loss, highest first."""
    losses_N = -np.log(np.clip(probabilities_NxK[np.arange(len(labels_N)), labels_N], 1e-12, None))
    order = np.argsort(-losses_N)[:k]
    return order, losses_N[order]


def plot_top_losses(path: str, images_NxHxWxC: np.ndarray, probabilities_NxK: np.ndarray, labels_N: np.ndarray,
                    class_names, k: int = 16) -> None:
    """Grid of the worst predictions: predicted / actual / loss / probability of the actual class."""
    indices, losses = top_losses(probabilities_NxK, labels_N, k)
    cols = 4
    rows = int(np.ceil(len(indices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.9))
    for ax, index, loss in zip(np.ravel(axes), indices, losses):
        image = images_NxHxWxC[index]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        predicted = int(np.argmax(probabilities_NxK[index]))
        ax.set_title(f"{class_names[predicted]} / {class_names[labels_N[index]]}\n"
                     f"{loss:.2f} / {probabilities_NxK[index, labels_N[index]]:.2f}", fontsize=8)
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle("top losses: predicted / actual, loss / probability of actual", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
