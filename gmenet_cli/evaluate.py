"""`gmenet evaluate`: metrics on a prepared split, per face size (a resolution sweep), for one or more models.

Metrics from the confusion matrix C (rows = true class, columns = prediction):
accuracy = trace(C)/sum(C); per class precision = C_ii/colsum_i, recall = C_ii/rowsum_i (0 when undefined,
as scikit-learn's zero_division=0); mean per-class accuracy = mean recall over classes present in the
split (the RAF-DB convention); macro-F1 = mean F1 over classes present in the truth or the predictions
(scikit-learn's default label set).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gmenet_cli import checkpoint
from gmenet_cli.data.loader import PairedBatches
from gmenet_cli.data.store import Store
from gmenet_cli.errors import DataError, UsageError


def metrics_from_confusion(conf: np.ndarray, classes: list[str]) -> dict:
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    support = conf.sum(1)
    predicted = conf.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    labelled = present | (predicted > 0)
    total = conf.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_class_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[labelled].mean()) if labelled.any() else 0.0,
        "count": int(total),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion": conf.astype(int).tolist(),
    }


@torch.inference_mode()
def confusion(model, split, scale: int | None, device, batch_size: int = 256) -> np.ndarray:
    """Run `model` over a split at one view: HR faces (scale None) or the stored LR faces at `scale`."""
    k = model.num_classes
    conf = torch.zeros(k * k, dtype=torch.int64)
    loader = PairedBatches(split, batch_size, [scale] if scale else [], shuffle=False, augment=False, with_hr=scale is None)
    for batch in loader:
        if scale is None:
            x = batch["hr"]
        else:
            ((pos, x),) = batch["lr"].values()
        pred = model(x.to(device)).argmax(1).cpu()
        conf += torch.bincount(batch["target"] * k + pred, minlength=k * k)
    return conf.reshape(k, k).numpy()


def _check_compatible(ck: dict, store: Store, path: str) -> None:
    if list(ck["classes"]) != store.classes:
        raise DataError(f"{path} predicts classes {ck['classes']}, but {store.path} has {store.classes}")
    if ck["input"]["channels"] != store.channels:
        raise DataError(f"{path} expects {ck['input']['channels']}-channel faces, {store.path} has {store.channels}")


def evaluate(weights: list[str], data: str | None, split: str | None, scales: list[int] | None,
             device, batch_size: int = 256, message=lambda s: None) -> dict:
    """Evaluate each checkpoint in `weights` on the same split and views. Scale 1 = the HR faces."""
    ckpts = [(w, checkpoint.load(w)) for w in weights]
    if data is None:
        data = ckpts[0][1].get("data", {}).get("path")
        if not data:
            raise UsageError("pass --data PREPARED (the checkpoint does not name its store)")
        message(f"using the store the model was trained on: {data}")
    store = Store(data)
    for path, ck in ckpts:  # before anything else: the wrong data is the most fundamental mismatch
        _check_compatible(ck, store, path)
    if split is None:
        split = "test" if "test" in store.splits else "val"
    part = store.split(split)
    if scales is None:
        # Default sweep: every LR scale in the store; teachers also on HR (their home ground).
        scales = sorted(store.scales)
        if any(ck.get("kind") == "teacher" for _, ck in ckpts):
            scales = [1] + scales
    bad = [s for s in scales if s != 1 and s not in store.scales]
    if bad:
        raise UsageError(f"scale x{bad[0]} is not in {store.path} (it has {', '.join(f'x{s}' for s in store.scales)}; 1 = HR)")
    report = {"data": str(store.path), "split": split, "classes": store.classes, "count": part.count, "models": []}
    for path, ck in ckpts:
        model = checkpoint.build_model(ck, path).to(device)
        results = []
        for s in scales:
            m = metrics_from_confusion(confusion(model, part, None if s == 1 else s, device, batch_size), store.classes)
            face_px = store.hr_size // s
            results.append({"view": "hr" if s == 1 else f"x{s}", "scale": s, "face_px": face_px, **m})
        report["models"].append({
            "weights": str(path), "model": ck["model"]["name"], "kind": ck.get("kind"),
            "trained_scales": ck["input"].get("scales", []), "distill": ck.get("distill"),
            "params": sum(p.numel() for p in model.parameters()), "results": results,
        })
    return report


def write_outputs(report: dict, out: Path) -> list[Path]:
    """metrics.json, confusion_matrix.png (first model, first view) and resolution_sweep.png."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json"]
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "metrics.json")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    classes = report["classes"]
    first = report["models"][0]
    view = first["results"][0]
    conf = np.asarray(view["confusion"], dtype=np.float64)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(classes), 0.8 + 0.7 * len(classes)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{first['model']} on {report['split']} ({view['view']}, {view['face_px']}px): "
                 f"acc {view['accuracy']:.3f}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    plt.close(fig)
    written.append(out / "confusion_matrix.png")
    if any(len(m["results"]) > 1 for m in report["models"]):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in report["models"]:
            px = [r["face_px"] for r in m["results"]]
            ax.plot(px, [r["accuracy"] for r in m["results"]], marker="o", label=f"{m['model']} ({Path(m['weights']).parent.parent.name})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("face size (px)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"resolution sweep on {report['split']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "resolution_sweep.png", dpi=100)
        plt.close(fig)
        written.append(out / "resolution_sweep.png")
    return written
