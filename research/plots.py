"""PNG plots: learning-rate range test, confusion matrix, top losses. Matplotlib's Agg backend (no display)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def lr_find(path: str, rates: np.ndarray, losses: np.ndarray, smoothed: np.ndarray,
            suggestions: dict[str, float], xlabel: str = "learning rate") -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(rates, losses, color="0.75", linewidth=1, label="loss")
    ax.plot(rates, smoothed, color="C0", linewidth=2, label="smoothed loss")
    for i, (name, rate) in enumerate(suggestions.items()):
        ax.axvline(rate, color=f"C{i + 1}", linestyle="--", label=f"{name}: {rate:.2e}")
    finite = smoothed[np.isfinite(smoothed)]
    if len(finite):
        ax.set_ylim(finite.min() - 0.1 * abs(finite.min()), min(finite.max(), 4 * finite[0]) * 1.05)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training loss")
    ax.legend()
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
