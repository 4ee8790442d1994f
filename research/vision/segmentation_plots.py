"""PNG plots for segmentation: a grid of image / true mask / predicted mask, one row per example (e.g. the best
and worst held-out examples by IoU). Matplotlib's Agg backend (no display)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from research.vision.segmentation import IGNORE_INDEX, per_image_iou  # noqa: E402


def class_colours(num_classes: int, colours=None) -> np.ndarray:
    """K x 3 floats in [0, 1]: the dataset's own colours (codes.txt) or a qualitative palette, background
    black."""
    if colours is not None:
        return np.asarray(colours, np.float64) / 255.0
    palette = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[:, :3]
    return np.concatenate([np.zeros((1, 3)), palette[np.arange(num_classes - 1) % 20]])


def colour_mask(mask_HxW: np.ndarray, num_classes: int, colours=None) -> np.ndarray:
    """H x W x 3 colours of a mask of class indices; void (IGNORE_INDEX) white."""
    table = np.concatenate([class_colours(num_classes, colours), np.ones((256 - num_classes, 3))])
    return table[mask_HxW]


def plot_mask_grid(path: str, images_NxHxWxC: np.ndarray, true_NxHxW: np.ndarray, predicted_NxHxW: np.ndarray,
                   titles, class_names, colours=None) -> None:
    """One row per example: the image, its true mask, the predicted mask (titled, e.g. with the IoU), and a
    legend of the classes' colours."""
    rows, num_classes = len(images_NxHxWxC), len(class_names)
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows + 0.8), squeeze=False)
    for row in range(rows):
        image = images_NxHxWxC[row]
        axes[row, 0].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        axes[row, 1].imshow(colour_mask(true_NxHxW[row], num_classes, colours), interpolation="nearest")
        axes[row, 2].imshow(colour_mask(predicted_NxHxW[row], num_classes, colours), interpolation="nearest")
        axes[row, 0].set_title(str(titles[row]), fontsize=8)
        axes[row, 1].set_title("true", fontsize=8)
        axes[row, 2].set_title("predicted", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    palette = class_colours(num_classes, colours)
    handles = [matplotlib.patches.Patch(color=palette[k], label=name) for k, name in enumerate(class_names)]
    handles.append(matplotlib.patches.Patch(facecolor="white", edgecolor="0.5", label=f"void ({IGNORE_INDEX})"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=7)
    fig.tight_layout(rect=(0, 0.08 if rows < 4 else 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_best_and_worst(path: str, images_NxHxWxC: np.ndarray, true_NxHxW: np.ndarray, predicted_NxHxW: np.ndarray,
                        class_names, colours=None, shown: int = 4) -> None:
    """`plot_mask_grid` of the `shown` best and the `shown` worst examples by their own mean IoU."""
    scores = per_image_iou(predicted_NxHxW, true_NxHxW, len(class_names))
    order = np.argsort(np.nan_to_num(scores, nan=np.inf))
    k = min(shown, len(order) // 2) or 1
    chosen = np.concatenate([order[::-1][:k], order[:k]])
    titles = [f"{'best' if i < k else 'worst'}: IoU {scores[n]:.3f}" for i, n in enumerate(chosen)]
    plot_mask_grid(path, images_NxHxWxC[chosen], true_NxHxW[chosen], predicted_NxHxW[chosen], titles, class_names,
                   colours)
