"""Every picture gmenet draws: training curves, the confusion matrix and the resolution sweep.

matplotlib with the Agg backend (no display needed); each figure is written to a temp file and renamed,
so a crash never leaves half a PNG. Plots are a convenience: without matplotlib they are skipped.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def figure(path: Path, *args, **kwargs):
    """`with figure(path, 1, 2, figsize=...) as (fig, axes):` -> drawn, saved atomically, closed.
    Yields None (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        yield None
        return
    fig, axes = plt.subplots(*args, **kwargs)
    try:
        yield fig, axes
        fig.tight_layout()
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        fig.savefig(tmp, dpi=kwargs.get("dpi", 100))
        tmp.replace(path)
    finally:
        plt.close(fig)


def training_curves(path: Path, rows: list[dict]) -> bool:
    """Loss parts (left) and accuracies (right) per epoch, from results.csv rows. Markers show every epoch
    (a one-epoch run is a dot, not empty axes); the mean validation accuracy is drawn thick and dashed so it
    does not hide the per-scale lines under it."""
    epochs = [r["epoch"] for r in rows]
    with figure(path, 1, 2, figsize=(10, 4), dpi=80) as drawn:
        if drawn is None:
            return False
        _, (a, b) = drawn
        for key in [k for k in rows[-1] if k.startswith("train_") and k not in ("train_acc", "train_images")]:
            a.plot(
                epochs, [r.get(key, float("nan")) for r in rows], marker="o", markersize=3, label=_loss_label(key[6:])
            )
        a.set_xlabel("epoch")
        a.set_title("training losses")
        a.legend(fontsize=8)
        for key in [k for k in rows[-1] if k in ("train_acc", "val_acc") or k.startswith("val_acc_x")]:
            mean = key == "val_acc" and any(k.startswith("val_acc_x") for k in rows[-1])
            b.plot(
                epochs,
                [r.get(key, float("nan")) for r in rows],
                marker="o",
                markersize=3,
                linestyle="--" if mean else "-",
                linewidth=2.5 if mean else 1.5,
                label="val_acc (mean over scales)" if mean else key,
            )
        b.set_xlabel("epoch")
        b.set_title("accuracy")
        b.legend(fontsize=8)
        for ax in (a, b):
            ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
    return True


def _loss_label(part: str) -> str:
    """What each loss part is: the total and the weighted terms add up; A-SKD's map parts are unweighted."""
    return {
        "loss": "loss (total)",
        "ce": "ce (classification)",
        "askd": "askd (weighted: lambda x maps)",
        "askd_channel": "askd_channel (unweighted)",
        "askd_spatial": "askd_spatial (unweighted)",
        "kd": "kd (logit KD, before its weight)",
    }.get(part, part)


def confusion_matrix(path: Path, conf, classes: list[str], title: str) -> bool:
    """Row-normalised confusion matrix (rows = true class)."""
    conf = np.asarray(conf, dtype=np.float64)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    k = len(classes)
    with figure(path, figsize=(1.0 + 0.8 * k, 0.8 + 0.7 * k)) as drawn:
        if drawn is None:
            return False
        fig, ax = drawn
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    return True


def resolution_sweep(path: Path, curves: list[tuple[str, list[int], list[float]]], title: str) -> bool:
    """Accuracy against face size, one line per model: curves = [(label, face px, accuracies)]."""
    with figure(path, figsize=(6, 4)) as drawn:
        if drawn is None:
            return False
        _, ax = drawn
        sizes = sorted({p for _, px, _ in curves for p in px})
        for label, px, acc in curves:
            ax.plot(px, acc, marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [f"{p}px" for p in sizes])  # face sizes, not 2^k
        ax.minorticks_off()
        ax.set_xlabel("face size")
        ax.set_ylabel("accuracy")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return True


def reliability_diagram(path: Path, views: list[tuple[str, dict]], title: str) -> bool:
    """Accuracy against confidence per bin, one panel per view: views = [(label, calibrate.reliability())].
    Bars on the diagonal are calibrated; below it, over-confident."""
    with figure(path, 1, len(views), figsize=(3.2 * len(views), 3.4), squeeze=False) as drawn:
        if drawn is None:
            return False
        _, axes = drawn
        for ax, (label, rel) in zip(axes[0], views):
            bins = len(rel["count"])
            edges = np.linspace(0, 1, bins + 1)
            filled = np.asarray(rel["count"]) > 0
            ax.bar(
                edges[:-1][filled],
                np.asarray(rel["accuracy"])[filled],
                width=1 / bins,
                align="edge",
                edgecolor="black",
                linewidth=0.5,
                label="accuracy",
            )
            ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence")
            ax.set_title(f"{label}\nECE {rel['ece']:.3f}", fontsize=9)
        axes[0][0].set_ylabel("accuracy")
        axes[0][0].figure.suptitle(title, fontsize=10)
    return True
