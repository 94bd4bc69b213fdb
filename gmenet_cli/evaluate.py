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
import torch.nn.functional as F

from gmenet_cli import checkpoint
from gmenet_cli.data.loader import PairedBatches
from gmenet_cli.data.store import Store
from gmenet_cli.errors import DataError, UsageError
from gmenet_cli.runtime import to_device
from gmenet_cli.tta import flip_average


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
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion": conf.astype(int).tolist(),
    }


def flip_faces(faces):
    """Mirror images of a batch of faces: a tensor, or mixed-size groups {scale: (positions, faces)}."""
    if torch.is_tensor(faces):
        return faces.flip(-1)
    return {s: (pos, f.flip(-1)) for s, (pos, f) in faces.items()}


def tta_logits(model, faces):
    """Flip test-time augmentation (tta.flip_average) of a torch model on a batch or on LR groups."""
    return flip_average(lambda f: model(f).float(), faces, flip_faces)


@torch.inference_mode()
def split_logits(
    model, split, scale: int | None, device, batch_size: int = 256, rank: int = 0, world: int = 1, tta: bool = False
):
    """The one evaluation loop (validation during training, `gmenet evaluate`, calibration): yield
    (logits (B, K) float32, targets (B,)) on `device` for this rank's share of a split at one view, HR faces
    (scale None) or the stored LR faces at `scale`; with `tta`, each face's logits are averaged with its
    mirror image's. Always in float32, as predict runs: best.pt is chosen on the numbers evaluate reports."""
    loader = PairedBatches(
        split,
        batch_size,
        [scale] if scale else [],
        shuffle=False,
        with_hr=scale is None,
        rank=rank,
        world=world,
        even=False,
    )
    for batch in loader:
        batch = to_device(batch, device)
        faces = batch["hr"] if scale is None else batch["lowres"]
        yield (tta_logits(model, faces) if tta else model(faces).float()), batch["target"]


@torch.inference_mode()
def score_split(
    model, split, scale: int | None, device, batch_size: int = 256, rank: int = 0, world: int = 1, tta: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (confusion counts (K, K) int64, summed cross-entropy) as tensors on `device`: accumulated there, so
    no batch waits for a host sync. Under DDP each rank passes its rank/world and the caller sums."""
    k = model.num_classes
    conf = torch.zeros(k * k, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for logits, target in split_logits(model, split, scale, device, batch_size, rank, world, tta):
        conf.scatter_add_(0, target * k + logits.argmax(1), torch.ones_like(target))
        loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
    return conf.reshape(k, k), loss_sum


def logits_and_labels(
    model, split, scale: int | None, device, batch_size: int = 256, tta: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A whole split's logits (N, K) and majority labels (N,) at one view, as numpy."""
    parts = [
        (z.cpu().numpy(), t.cpu().numpy()) for z, t in split_logits(model, split, scale, device, batch_size, tta=tta)
    ]
    return np.concatenate([z for z, _ in parts]), np.concatenate([t for _, t in parts])


def confusion(model, split, scale: int | None, device, batch_size: int = 256, tta: bool = False) -> np.ndarray:
    """Confusion matrix (rows = true class) of `model` on a whole split at one view, as numpy."""
    return confusion_from(*logits_and_labels(model, split, scale, device, batch_size, tta), model.num_classes)


def confusion_from(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Confusion counts (rows = true class, columns = the argmax of the logits)."""
    return np.bincount(labels * k + logits.argmax(1), minlength=k * k).reshape(k, k)


def calibrate_checkpoint(path: str | Path, split, device, batch_size: int = 256, tta: bool = True) -> dict:
    """Fit a temperature per trained face size of the checkpoint at `path` on `split` (its validation
    faces) and store it in the checkpoint (rewritten atomically). Returns the `calibration` entry."""
    from gmenet_cli.calibrate import calibrate

    ckpt = checkpoint.load(path)
    model = checkpoint.build_model(ckpt, path).to(device)
    spec = ckpt["input"]
    views = (
        {int(spec["hr_size"]): None}
        if spec.get("view") == "hr"
        else {int(spec["hr_size"]) // int(s): int(s) for s in spec.get("scales", [])}
    )
    cal = calibrate(
        {px: logits_and_labels(model, split, scale, device, batch_size, tta) for px, scale in views.items()}
    )
    cal.update({"split": split.name, "tta": tta})
    checkpoint.save(path, {**ckpt, "calibration": cal})
    return cal


def _check_compatible(ckpt: dict, store: Store, path: str) -> None:
    if list(ckpt["classes"]) != store.classes:
        raise DataError(f"{path} predicts classes {ckpt['classes']}, but {store.path} has {store.classes}")
    if ckpt["input"]["channels"] != store.channels:
        raise DataError(f"{path} expects {ckpt['input']['channels']}-channel faces, {store.path} has {store.channels}")


class OnnxEvalModel(torch.nn.Module):
    """A gmenet .onnx export (the shipped one-size models, a user's `gmenet export`) in evaluate's loop: faces
    as torch tensors (a batch, or LR groups {scale: (positions, faces)}) -> logits from onnxruntime on the CPU,
    through ortmodel.OnnxModel exactly as predict runs it (its own upsampling to the graph's size)."""

    def __init__(self, path: str):
        super().__init__()
        from gmenet_cli.ortmodel import OnnxModel

        self.onnx = OnnxModel(path)
        self.num_classes = len(self.onnx.classes)

    def forward(self, faces):
        if torch.is_tensor(faces):
            x = np.ascontiguousarray(faces.cpu().numpy())
            return torch.from_numpy(self.onnx.logits(x)).to(faces.device)
        total = sum(len(pos) for pos, _ in faces.values())
        out = None
        for pos, group in faces.values():
            z = self.forward(group)
            out = z.new_empty((total, z.shape[1])) if out is None else out
            out[pos.to(z.device)] = z
        return out

    def description(self, path: str) -> dict:
        """The parts of a checkpoint evaluate reads, from the export's metadata."""
        m = self.onnx
        teacher = m.trained_sizes == [m.hr_size]
        scales = [] if teacher else sorted(m.hr_size // s for s in m.trained_sizes)
        return {
            "classes": m.classes,
            "kind": "teacher" if teacher else "student",
            "model": {"name": m.model_name},
            "input": {"channels": m.channels, "hr_size": m.hr_size, "scales": scales,
                      **({"view": "hr"} if teacher else {})},
            "calibration": m.calibration,
        }


def _load(path: str, device) -> tuple[dict, torch.nn.Module | None]:
    """(checkpoint description, the model when it is already built: an ONNX export's, through onnxruntime on
    the CPU as predict runs it; on CUDA, PyTorch rebuilds it from the checkpoint the export carries)."""
    if str(path).lower().endswith(".onnx") and torch.device(device).type != "cuda":
        model = OnnxEvalModel(str(path))
        return model.description(str(path)), model
    return checkpoint.load(path), None


def evaluate(
    weights: list[str],
    data: str | None,
    split: str | None,
    scales: list[int] | None,
    device,
    batch_size: int = 256,
    message=lambda s: None,
    tta: bool = True,
) -> dict:
    """Evaluate each checkpoint in `weights` on the same split and views. Scale 1 = the HR faces."""
    loaded = {str(w): _load(w, device) for w in weights}
    ckpts = [(w, loaded[str(w)][0]) for w in weights]
    if data is None:
        data = ckpts[0][1].get("data", {}).get("path")
        if not data:  # a shipped model or an export: the newest store prepared here, as bare `gmenet train` takes
            from gmenet_cli.data.store import find_latest_store

            latest = find_latest_store()
            if latest is None:
                raise UsageError(f"{ckpts[0][0]} does not name the store it was trained on and there is none under "
                                 "prepared/: run gmenet prepare (e.g. --src ferplus --root DIR --scale 2,4,8) "
                                 "or pass --data PREPARED")
            message(f"using the most recent prepared store: {latest} ({ckpts[0][0]} does not name its own)")
            data = str(latest)
        elif not Path(data, "manifest.json").is_file():
            raise UsageError(f"pass --data PREPARED: the store {ckpts[0][0]} was trained on ({data}) is not here "
                             "(gmenet prepare makes one)")
        message(f"using the store the model was trained on: {data}")
    store = Store(data)
    for path, ckpt in ckpts:  # before anything else: the wrong data is the most fundamental mismatch
        _check_compatible(ckpt, store, path)
    if split is None:
        split = "test" if "test" in store.splits else "val"
    part = store.split(split)
    if scales is None:
        # Default sweep: every LR scale in the store; teachers also on HR (their home ground).
        scales = sorted(store.scales)
        if any(ckpt.get("kind") == "teacher" for _, ckpt in ckpts):
            scales = [1] + scales
    bad = [s for s in scales if s != 1 and s not in store.scales]
    if bad:
        raise UsageError(
            f"scale x{bad[0]} is not in {store.path} (it has {', '.join(f'x{s}' for s in store.scales)}; 1 = HR)"
        )
    report = {
        "data": str(store.path),
        "split": split,
        "classes": store.classes,
        "count": part.count,
        "tta": tta,
        "models": [],
    }
    from gmenet_cli.calibrate import calibrated_softmax, ece, reliability, softmax, temperature_for, temperatures_for

    for path, ckpt in ckpts:
        built = loaded[str(path)][1]
        model = built if built is not None else checkpoint.build_model(ckpt, path).to(device)
        results = []
        for s in scales:
            logits, labels = logits_and_labels(model, part, None if s == 1 else s, device, batch_size, tta)
            m = metrics_from_confusion(confusion_from(logits, labels, len(store.classes)), store.classes)
            face_px = store.hr_size // s
            # confidences as predict gives them: with the checkpoint's temperatures for this size (1 if none)
            t = temperature_for(ckpt.get("calibration"), face_px)
            temps = temperatures_for(ckpt.get("calibration"), face_px)
            rel = reliability(calibrated_softmax(logits, temps), labels)
            results.append(
                {
                    "view": "hr" if s == 1 else f"x{s}",
                    "scale": s,
                    "face_px": face_px,
                    **m,
                    "temperature": t,
                    "class_temperature": temps if isinstance(temps, list) else None,
                    "ece": rel["ece"],
                    "ece_uncalibrated": ece(softmax(logits), labels),
                    "reliability": rel,
                }
            )
        trained = [1] if ckpt.get("kind") == "teacher" else list(ckpt["input"].get("scales", []))
        # the view a per-class table and confusion matrix describe: the model's own (its first trained scale
        # in the sweep; HR for a teacher), not simply the first one asked for
        primary = next((i for i, r in enumerate(results) if r["scale"] in trained), 0)
        label = f"{ckpt['model']['name']} ({run_name(path)})"
        for r in results:  # a model that gives every face one class has not learnt (or has collapsed)
            used = [c for c, n in zip(store.classes, np.asarray(r["confusion"]).sum(0)) if n > 0]
            if len(used) == 1 and r["count"] > 1:
                message(f"warning: {label} predicts '{used[0]}' for every face at {r['face_px']}px")
        report["models"].append(
            {
                "weights": str(path),
                "label": label,
                "model": ckpt["model"]["name"],
                "kind": ckpt.get("kind"),
                "primary_view": primary,
                "trained_scales": ckpt["input"].get("scales", []),
                "distill": ckpt.get("distill"),
                "params": sum(p.numel() for p in model.parameters()) if built is None else None,
                "results": results,
            }
        )
    return report


def run_name(path) -> str:
    """How a model is named in tables and plots: its run (runs/train/<name>/weights/best.pt -> <name>), else
    its file name without the suffix (the shipped weights/default.onnx -> default)."""
    p = Path(path)
    in_run = p.parent.name == "weights" and p.parent.parent.parent.parent.name == "runs"
    return p.parent.parent.name if in_run else p.stem


def write_outputs(report: dict, out: Path) -> list[Path]:
    """metrics.json, confusion_matrix.png (first model, its own view), reliability.png (first model, every
    view) and resolution_sweep.png."""
    from gmenet_cli import plots

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json"]
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "metrics.json")
    first = report["models"][0]
    view = first["results"][first.get("primary_view", 0)]
    title = f"{first['model']} on {report['split']} ({view['view']}, {view['face_px']}px): acc {view['accuracy']:.3f}"
    if plots.confusion_matrix(out / "confusion_matrix.png", view["confusion"], report["classes"], title):
        written.append(out / "confusion_matrix.png")
    if plots.reliability_diagram(
        out / "reliability.png",
        [(f"{r['face_px']}px", r["reliability"]) for r in first["results"]],
        f"{first['model']} on {report['split']}: reliability (15 bins)",
    ):
        written.append(out / "reliability.png")
    if any(len(m["results"]) > 1 for m in report["models"]):
        curves = [
            (
                m["label"],
                [r["face_px"] for r in m["results"]],
                [r["accuracy"] for r in m["results"]],
            )
            for m in report["models"]
        ]
        if plots.resolution_sweep(out / "resolution_sweep.png", curves, f"resolution sweep on {report['split']}"):
            written.append(out / "resolution_sweep.png")
    return written
