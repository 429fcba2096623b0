"""PNG figures for the agreement report. Each function writes one file and returns its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are built in CI and over SSH, never shown on screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from evaluator.agreement import round_to_scale, scale_labels  # noqa: E402

ArrayLike = Sequence[float] | np.ndarray


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)  # figures are never reused; keep memory flat when a report draws many
    return path


def scatter(pred: ArrayLike, human: ArrayLike, path: str | Path, seed: int = 0) -> Path:
    """Prediction vs human grade. Human grades are integers, so both axes get a little jitter to show density."""
    p, h = np.asarray(pred, dtype=float), np.asarray(human, dtype=float)
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(h + rng.uniform(-0.15, 0.15, h.size), p + rng.uniform(-0.05, 0.05, p.size), s=8, alpha=0.4)
    lo, hi = float(min(p.min(), h.min())), float(max(p.max(), h.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", label="identity")
    ax.set(xlabel="human grade (jittered)", ylabel="evaluator score", title=f"Evaluator vs human (n={p.size})")
    ax.legend(loc="upper left")
    return _save(fig, path)


def confusion_heatmap(pred: ArrayLike, human: ArrayLike, scale_min: float, scale_max: float, path: str | Path) -> Path:
    """Counts of (human level, rounded prediction level) on the integer scale."""
    labels = scale_labels(scale_min, scale_max)
    pr = round_to_scale(np.asarray(pred, dtype=float), scale_min, scale_max) - labels[0]
    hr = round_to_scale(np.asarray(human, dtype=float), scale_min, scale_max) - labels[0]
    counts = np.zeros((labels.size, labels.size), dtype=int)
    np.add.at(counts, (hr.astype(int), pr.astype(int)), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(counts, cmap="Blues", origin="lower")
    for i, j in np.ndindex(counts.shape):
        color = "white" if counts[i, j] > counts.max() / 2 else "black"
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    ticks = np.arange(labels.size)
    names = [f"{v:g}" for v in labels]
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set(xlabel="evaluator (rounded)", ylabel="human", title="Confusion matrix")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)


def residuals_vs_length(pred: ArrayLike, human: ArrayLike, lengths: ArrayLike, path: str | Path) -> Path:
    """Residual (prediction - human) against answer length: shows whether the evaluator rewards verbosity."""
    p, h, n = (np.asarray(a, dtype=float) for a in (pred, human, lengths))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(n, p - h, s=8, alpha=0.4)
    ax.axhline(0.0, color="grey", linestyle="--")
    if np.unique(n).size > 1:
        slope, intercept = np.polyfit(n, p - h, 1)
        xs = np.linspace(n.min(), n.max(), 50)
        ax.plot(xs, slope * xs + intercept, color="tab:red", label=f"trend {slope * 1000:+.3f} per 1000 chars")
        ax.legend(loc="upper right")
    ax.set(xlabel="answer length (characters)", ylabel="evaluator - human", title="Residuals vs answer length")
    return _save(fig, path)


def per_question_bars(per_question: dict[str, float], path: str | Path, label: str = "metric") -> Path:
    """One horizontal bar per question, sorted, so the worst questions stand out at the bottom."""
    items = sorted(per_question.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.25 * len(items) + 1)))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set(xlabel=label, title="Per question")
    ax.tick_params(axis="y", labelsize=7)
    return _save(fig, path)


def calibration_curve(
    raw_pred: ArrayLike, calibrated_pred: ArrayLike, human: ArrayLike, path: str | Path, bins: int = 10
) -> Path:
    """Mean human grade per bin of prediction, before and after calibration; on the diagonal means calibrated.

    Bins are prediction quantiles, so every point averages about the same number of answers.
    """
    h = np.asarray(human, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, values in (("raw", raw_pred), ("calibrated", calibrated_pred)):
        p = np.asarray(values, dtype=float)
        edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
        which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(edges.size - 2, 0))
        used = np.unique(which)
        ax.plot([p[which == b].mean() for b in used], [h[which == b].mean() for b in used], marker="o", label=name)
    lo, hi = float(h.min()), float(h.max())
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", label="identity")
    ax.set(xlabel="mean prediction in bin", ylabel="mean human grade", title="Calibration")
    ax.legend(loc="upper left")
    return _save(fig, path)
