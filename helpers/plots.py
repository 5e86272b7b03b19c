"""Plots from a trainer's ``state.log_history``, saved to ``figures/`` and shown inline."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt

from .paths import figures_dir


def device_label() -> str:
    """Where speeds were measured, for a plot's label: the GPU's name on CUDA, else "this CPU"."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "this CPU"


def speed_label(unit: str = "tokens/s") -> str:
    """``"tokens/s (<device>)"``: a speed is a property of the hardware it was measured on (:func:`device_label`)."""
    return f"{unit} ({device_label()})"


def curve(log_history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of one logged metric; entries without ``key`` are skipped."""
    points = [(h["step"], float(h[key])) for h in log_history if key in h and "step" in h]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(
    log_history: Sequence[dict],
    keys: Sequence[str] = ("loss",),
    title: str = "",
    filename: str | None = None,
    labels: Sequence[str] | None = None,
):
    """One panel per key of ``log_history`` (loss, rewards/margins, ...), saved as ``figures/<filename>``.

    Raises ``ValueError`` naming the available keys when none of ``keys`` was logged.
    """
    available = sorted({k for h in log_history for k in h})
    present = [k for k in keys if curve(log_history, k)[0]]
    if not present:
        raise ValueError(f"None of {list(keys)} is in the log history; logged keys: {available}.")
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.2), squeeze=False)
    for ax, key in zip(axes[0], present):
        steps, values = curve(log_history, key)
        ax.plot(steps, values, marker="o", markersize=3)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if filename:
        save(fig, filename)
    return fig


def plot_curves_overlay(histories: dict[str, Sequence[dict]], key: str = "loss", title: str = "", filename: str | None = None):
    """Several runs' curves of one metric on one axis (e.g. LoRA versus QLoRA)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, history in histories.items():
        steps, values = curve(history, key)
        ax.plot(steps, values, marker="o", markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or key)
    fig.tight_layout()
    if filename:
        save(fig, filename)
    return fig


def plot_bars(values: dict[str, float], ylabel: str, title: str = "", filename: str | None = None, fmt: str = "{:.2f}",
              intervals: dict[str, tuple[float, float]] | None = None):
    """A labelled bar chart of one number per variant; ``intervals`` (variant -> (low, high)) draws each one's 95%
    interval as an error bar."""
    fig, ax = plt.subplots(figsize=(1.2 * len(values) + 2.5, 3.4))
    names, heights = list(values), list(values.values())
    yerr = None
    if intervals:
        yerr = [[max(0.0, v - intervals[n][0]) if n in intervals else 0 for n, v in zip(names, heights)],
                [max(0.0, intervals[n][1] - v) if n in intervals else 0 for n, v in zip(names, heights)]]
    bars = ax.bar(names, heights, color="#4C72B0", yerr=yerr, capsize=4, ecolor="#333333")
    for bar, value in zip(bars, heights):  # with error bars the value goes inside the bar, at its foot
        y = 0 if intervals else bar.get_height()
        ax.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, y), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=9, color="white" if intervals else "black")
    ax.set_ylabel(ylabel)
    ax.set_title(title + (" (bars: 95% intervals)" if intervals else ""))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    if filename:
        save(fig, filename)
    return fig


def grouped_bars(table, intervals: dict[str, dict[str, tuple[float, float]]], title: str = "", ylabel: str = "",
                 filename: str | None = None, **kwargs):
    """``table`` (rows: variants, columns: metrics) as grouped bars, each with its 95% interval as an error bar where
    ``intervals[column][row]`` gives one (``(low, high)``, in the table's units); ``kwargs`` go to ``DataFrame.plot.bar``."""
    import numpy as np

    yerr = np.zeros((len(table.columns), 2, len(table.index)))
    for m, column in enumerate(table.columns):
        for n, row in enumerate(table.index):
            if (bounds := intervals.get(column, {}).get(row)) is not None:
                value = table.loc[row, column]
                yerr[m, :, n] = max(0.0, value - bounds[0]), max(0.0, bounds[1] - value)
    ax = table.plot.bar(yerr=yerr, capsize=3, rot=kwargs.pop("rot", 0), **kwargs)   # kwargs may hold ax=...
    ax.set_title(title + " (bars: 95% intervals)")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if filename:
        ax.figure.tight_layout()
        save(ax.figure, filename)
    return ax.figure


def save(fig, filename: str) -> Path:
    """Save ``fig`` as ``figures/<filename>`` (150 dpi) and return the path."""
    path = figures_dir() / filename
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path
