"""Image plots: confusion matrix, most-confused pairs, top losses, class activation maps."""

import matplotlib.pyplot as plt
import numpy as np

from research.core.plots import save


def confusion_matrix(labels_N: np.ndarray, predictions_N: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[actual, predicted]."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels_N, predictions_N), 1)
    return counts


def plot_confusion_matrix(path: str, counts_KxK: np.ndarray, class_names) -> None:
    """Counts per (actual, predicted) cell; the figure grows with the number of classes."""
    num_classes = len(class_names)
    side = max(6.0, 0.32 * num_classes + 3)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    ax.imshow(counts_KxK, cmap="Blues")
    fontsize = 8 if num_classes <= 15 else 6 if num_classes <= 40 else 0
    for (i, j), count in np.ndenumerate(counts_KxK):
        if fontsize and (count or i == j):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=fontsize,
                    color="white" if count > counts_KxK.max() / 2 else "black")
    tick_size = 9 if num_classes <= 15 else 7
    ax.set_xticks(range(num_classes), class_names, rotation=45 if num_classes <= 15 else 90, ha="right"
                  if num_classes <= 15 else "center", fontsize=tick_size)
    ax.set_yticks(range(num_classes), class_names, fontsize=tick_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    accuracy = np.trace(counts_KxK) / max(counts_KxK.sum(), 1)
    ax.set_title(f"confusion matrix ({counts_KxK.sum()} examples, accuracy {accuracy:.2%})")
    save(fig, path)


def plot_most_confused(path: str, pairs, top: int = 15) -> None:
    """Horizontal bars for the most frequent (actual, predicted, count) confusions, most frequent on top."""
    pairs = list(pairs)[:top]
    fig, ax = plt.subplots(figsize=(7, 0.4 * max(len(pairs), 3) + 1.2))
    if pairs:
        labels = [f"{actual} \u2192 {predicted}" for actual, predicted, _ in pairs]
        counts = [count for _, _, count in pairs]
        bars = ax.barh(range(len(pairs)), counts, color="C3")
        ax.bar_label(bars, fontsize=8, padding=2)
        ax.set_yticks(range(len(pairs)), labels, fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, max(counts) * 1.12)
    else:
        ax.text(0.5, 0.5, "no confusions", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_xlabel("examples")
    ax.set_title("most confused: actual \u2192 predicted")
    save(fig, path)


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
    long_names = max(map(len, class_names)) > 14
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * (3.2 if long_names else 2.9)), squeeze=False)
    for ax, index, loss in zip(np.ravel(axes), indices, losses):
        _show(ax, images_NxHxWxC[index])
        predicted = int(np.argmax(probabilities_NxK[index]))
        names = f"{class_names[predicted]} / {class_names[labels_N[index]]}"
        if long_names:  # e.g. dog breeds: one name per line
            names = names.replace(" / ", " /\n")
        ax.set_title(f"{names}\n{loss:.2f} / {probabilities_NxK[index, labels_N[index]]:.2f}", fontsize=8)
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle("top losses: predicted / actual, loss / probability of actual", fontsize=10)
    save(fig, path)


def plot_cams(path: str, images_NxHxWxC: np.ndarray, maps_NxHxW: np.ndarray, titles, cols: int = 3) -> None:
    """Class activation maps: each image beside itself under its map (jet, scaled to the map's own range;
    red = the most evidence for the class named in the title)."""
    rows = int(np.ceil(len(images_NxHxWxC) / cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2 * cols * 1.6, rows * 2.1), squeeze=False)
    for i, (image, cam, title) in enumerate(zip(images_NxHxWxC, maps_NxHxW, titles)):
        left, right = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        _show(left, image)
        _show(right, image)
        right.imshow((cam - cam.min()) / max(float(np.ptp(cam)), 1e-12), cmap="jet", alpha=0.5,
                     interpolation="bilinear")
        left.set_title(title.replace(" \u2192 ", " \u2192\n") if len(title) > 32 else title, fontsize=8, loc="left")
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle("class activation maps of the predicted class (actual \u2192 predicted, probability)", fontsize=10)
    save(fig, path)


def _show(ax, image_HxWxC: np.ndarray) -> None:
    if image_HxWxC.shape[-1] == 1:
        ax.imshow(image_HxWxC[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image_HxWxC)
