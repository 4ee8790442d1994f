"""PNG plots every area uses: the learning-rate range test, and `save` (tight layout, closes the figure).
Matplotlib's Agg backend (no display)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from research.core import lr_finder  # noqa: E402


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
    save(fig, path)


def save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
