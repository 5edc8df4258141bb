"""Drawing the suite's plots: one PNG, a panel per :class:`~benchmarks._harness.Plot`.

matplotlib is imported only here, when a plot is asked for::

    save_plot([section.plot for section in sections if section.plot], "bench.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks._harness import Plot, fmt

__all__ = ["save_plot"]


def save_plot(plots: Sequence[Plot], path: str) -> None:
    """Draw every plot as one panel of a PNG at ``path`` (matplotlib, Agg, imported here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2 if len(plots) > 1 else 1
    rows = (len(plots) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.2 * rows), squeeze=False)
    for ax, plot in zip(axes.flat, plots, strict=False):
        _draw(ax, plot)
    for ax in list(axes.flat)[len(plots) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _draw(ax: Any, plot: Plot) -> None:
    n = max(len(plot.series), 1)
    values = [y for ys in plot.series.values() for y in ys if y] + list(plot.refs.values())
    if plot.kind == "line":
        xs = [float(c) for c in plot.categories]
        for label, ys in plot.series.items():
            points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.set_xscale("log")
    else:
        width = 0.8 / n
        for k, (label, ys) in enumerate(plot.series.items()):
            xs = [i + (k - (n - 1) / 2) * width for i in range(len(plot.categories))]
            heights = [0.0 if y is None else y for y in ys]
            bars = ax.bar(xs, heights, width=width, label=label)
            ax.bar_label(bars, labels=[fmt(y) if y else "" for y in ys], fontsize=6)
        ax.set_xticks(range(len(plot.categories)))
        ax.set_xticklabels(plot.categories, fontsize=8)
    for k, (label, y) in enumerate(plot.refs.items()):
        ax.axhline(y, linestyle="--", linewidth=0.8, color=f"C{k + 5}", label=label)
    if plot.log:
        ax.set_yscale("log")
    if values:  # headroom above the tallest bar for the legend
        top = max(values)
        ax.set_ylim(top=top * 8 if plot.log else top * 1.35)
    ax.set_title(plot.title, fontsize=10)
    ax.set_ylabel(plot.ylabel, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", ncol=min(4, n + len(plot.refs)))
