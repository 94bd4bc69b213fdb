"""Package a trained checkpoint as the default model that `gmenet predict` uses without --weights.

Takes best.pt without training state (optimiser, scheduler, RNG), with machine-specific paths reduced to
names and the weights stored as float16 (half the file; they load into the float32 model unchanged
otherwise), and exports it to gmenet_cli/weights/default.onnx (graph fixed at the working size, float16
weights; what `predict` runs on the CPU without torch). The .onnx carries the checkpoint, so PyTorch rebuilds
the model from it (--device cuda, train --init default) and no .pt ships (the package's weights stay within
25 MB). Checks the file stays under 10 MB and writes the model card (gmenet_cli/weights/MODEL_CARD.md) from an
`evaluate` metrics.json of the float16 checkpoint.

`--name default-12px` ships a one-size model beside it instead (default-12px.onnx, which predict uses for
the faces it reads at that size) and writes its own section of the model card. `--int8-weights` stores
its convolution weights as int8 with a scale per output channel (`gmenet export --int8-weights`: about half
the float16 file; the card then reports how many labels differ from the float16 checkpoint's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import tempfile
from pathlib import Path

from _common import REPO

CARD = """# gmenet default model: {name}

- **Architecture**: `{name}` (GME-Net student, {params:,} parameters, {gflops:.3f} GFLOPs per face), input
  {channels}-channel faces; trained LR sizes {sizes} px (scales {scales} of {hr} px HR faces), working size
  {working} px. `predict` picks the largest trained size not above each detected face's size{routing}.
- **Data**: FERPlus (FER2013 images, Microsoft FERPlus crowd labels, 8 classes: {classes}); trained on the
  crowd-vote distributions, evaluated on majority labels. Train split for training, Valid split for model
  selection and the numbers below. FER2013 images are for research use only: so is this model.
- **Recipe** (the `ferplus` preset, with the frozen teacher in float: since 2026-12-04 the preset runs it in int8
  on the CPU, which distilled students as accurate in two full-length pairs, and `--set
  distill.teacher_runtime=auto` gives the float one): `gmenet distill-teacher --preset ferplus` then `{command}`.
  Teacher `{teacher}` ({teacher_acc}); A-SKD weight {askd}{kd}; {epochs} epochs, {optim} lr {lr} ({schedule}),
  batch {batch}, weight EMA {ema}, augmentation drawn on the fly (shift {shift} px, zoom +-{zoom}, rotation
  +-{rotate} deg, flip) with the LR faces degraded from the augmented HR faces; {objective}; trained {date} on
  {machine}.
- **Files**: `default.onnx` ({onnx_mb:.1f} MB; weights stored as float16 to halve the file, cast to float32
  when loaded, graph at {working} px: what `gmenet predict` runs on the CPU through onnxruntime, without
  importing torch; logits within {parity:.0e} of the float16 checkpoint at every trained size; {agree}). It
  carries that checkpoint too: `--device cuda` and `train --init default` rebuild the model in PyTorch from it.
- **Accuracy on FERPlus {split}** (measured on the float16 checkpoint with flip TTA, as `gmenet evaluate` and
  `predict` run it; 3,555 faces; the model was selected on this split):

{table}
{cross}
- **Intended use**: research and prototyping of expression recognition on small, frontal-ish faces (CCTV,
  crowd shots, video-call tiles). **Limits**: FER2013 is web-scraped, mostly frontal, grayscale, 48x48;
  rare classes (contempt, disgust, fear) are recognised far worse than the common ones (see per-class
  recall in metrics.json); small, blurred colour video frames are read far worse than photos (on
  muxspace-val the shipped models read 78.5% of its LFW photos at full size and 18% of its film stills,
  BENCHMARKS.md); expression is not emotion; do not use it to make decisions about people.
"""

ONE_SIZE_HEAD = "\n## One-size model "
ONE_SIZE = ONE_SIZE_HEAD + """{name}

- `gmenet predict` sends the faces it reads at {size} px to this model instead of the all-sizes one above
  ({what}). Trained {date} on {machine}:
  `{command}`.
- **Files**: {files}, {dtype};
  logits within {parity:.0e} of the checkpoint's; {agree}.
- **Accuracy on FERPlus {split}** (flip TTA; the model was selected on this split):

{table}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--metrics", required=True, help="metrics.json from gmenet evaluate on the Valid split")
    ap.add_argument("--machine", default="2 CPU cores")
    ap.add_argument("--name", default="default", help="default, or default-<N>px for a one-size model")
    ap.add_argument("--command", help="one-size model: the commands that trained it (for the card)")
    ap.add_argument("--cross", help="cross_eval.py --json of this model on another source (muxspace-val), for the card")
    ap.add_argument("--int8-weights", action="store_true",
                    help="a one-size model: convolution weights as int8 per output channel (export --int8-weights)")
    args = ap.parse_args()
    one_size = args.name != "default"
    assert one_size or not args.int8_weights, "--int8-weights is for a one-size model (default keeps float16)"

    from gmenet_cli import checkpoint

    ckpt = checkpoint.load(args.weights)
    for key in ("optimizer", "scheduler", "rng", "train_state_dict", "ema_state"):
        ckpt.pop(key, None)
    store_path = Path(ckpt.get("data", {}).get("path", ""))
    ckpt["data"] = {**ckpt.get("data", {}), "path": store_path.name}
    if ckpt.get("teacher"):
        ckpt["teacher"] = {**ckpt["teacher"], "path": Path(ckpt["teacher"]["path"]).name}
    ckpt["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    out = REPO / "gmenet_cli" / "weights" / f"{args.name}.pt"
    sizes = checkpoint.trained_sizes(ckpt)
    if one_size:
        assert args.name == f"default-{sizes[0]}px" and len(sizes) == 1, f"{args.weights} is trained at {sizes} px"
        assert args.command, "--command: how this one-size model was trained (for its card section)"
        if ckpt.get("init"):
            ckpt["init"] = {**ckpt["init"], "path": Path(ckpt["init"]["path"]).name}
    out.parent.mkdir(parents=True, exist_ok=True)
    from gmenet_cli.export import export

    model = checkpoint.build_model(ckpt)
    with tempfile.TemporaryDirectory() as tmp:  # the float16 checkpoint, exported and then not shipped
        half = Path(tmp) / out.name
        checkpoint.save(half, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
        # graph at the working size, float16 weights; the file carries this checkpoint (checked by export)
        info = export(str(half), "onnx", str(out.with_suffix(".onnx")), int(model.input_size),
                      half_weights=not args.int8_weights, int8_weights=args.int8_weights)
    print(f"wrote {info['path']}: parity {info['max_abs_diff']:.1e} at {info['checked_sizes']} px")
    onnx_mb = out.with_suffix(".onnx").stat().st_size / 1e6
    assert onnx_mb <= 10, f"{out.with_suffix('.onnx').name} is {onnx_mb:.1f} MB (limit 10)"
    report = json.loads(Path(args.metrics).read_text())
    teacher = ckpt["input"].get("view") == "hr"
    scales = [1] if teacher else ckpt["input"]["scales"]
    agree = agreement(model, out.with_suffix(".onnx"), store_path, report["split"], scales)
    m = report["models"][0]
    rows = ["  | face | accuracy | mean class acc | macro F1 | ECE (temperature) |", "  |---|---|---|---|---|"]
    for r in m["results"]:
        per = r.get("class_temperature")
        temps = (f"T {min(per):.2f}-{max(per):.2f} per predicted class" if per and min(per) < max(per)
                 else f"T {r['temperature']:.3f}")
        ece = f"{r['ece']:.3f} ({temps})" if "ece" in r else "not measured"
        rows.append(f"  | {r['face_px']} px ({r['view']}) | {r['accuracy'] * 100:.2f}% | "
                    f"{r['mean_class_accuracy'] * 100:.2f}% | {r['macro_f1'] * 100:.2f}% | {ece} |")
    classes = report["classes"]  # recall of every class at every size: where the rare ones stand
    rows += ["", "  | face | " + " | ".join(classes) + " |", "  |---|" + "---|" * len(classes)]
    for r in m["results"]:
        rows.append(f"  | {r['face_px']} px | " + " | ".join(f"{100 * r['per_class'][c]['recall']:.1f}%"
                                                          for c in classes) + " |")
    if one_size:
        what = (f"the high-resolution teacher `{ckpt['model']['name']}`, "
                f"{sum(v.numel() for v in ckpt['state_dict'].values() if v.is_floating_point()):,} weights, that "
                "the students are distilled from; same classes and input channels" if teacher else
                f"same architecture, classes and input; trained at {sizes[0]} px only")
        files = (f"`{args.name}.onnx` ({onnx_mb:.1f} MB; onnxruntime on the CPU, PyTorch from the checkpoint it "
                 "carries with `--device cuda`)")
        dtype = ("convolution and linear weights stored as int8 with a scale per output channel (depthwise "
                 "kernels and BatchNorm as float16; `gmenet export --int8-weights`), dequantized to float32 when "
                 "loaded" if args.int8_weights else "float16 weights as above")
        section = ONE_SIZE.format(name=args.name, size=sizes[0], command=args.command, what=what, files=files,
                                  dtype=dtype,
                                  agree=agree, split=report["split"],
                                  parity=max(info["max_abs_diff"], 1e-6), table="\n".join(rows),
                                  date=dt.date.today().isoformat(), machine=args.machine)
        main_card, sections = read_card(out.parent / "MODEL_CARD.md")
        write_card(out.parent / "MODEL_CARD.md", main_card, {**sections, args.name: section})
        print(f"wrote {out.with_suffix('.onnx')} ({onnx_mb:.1f} MB) and its section of {out.parent / 'MODEL_CARD.md'}")
        return
    cfg = ckpt["config"]
    from gmenet_cli.config import build_config
    from gmenet_cli.models.registry import count_flops

    preset = build_config(preset="ferplus").to_dict()
    differs = [
        f"--set {sec}.{k}={v}"
        for sec in ("train", "optim", "distill", "augment")
        for k, v in cfg[sec].items()
        if k not in ("device", "threads", "teacher_epochs")
        and preset[sec].get(k) != v
        and not (sec == "train" and k == "scales" and sorted(v) == sorted(ckpt["input"]["scales"]))
    ]
    others = sorted(int(m.group(1)) for p in out.parent.glob("default-*px.onnx")
                    if (m := re.fullmatch(r"default-(\d+)px\.onnx", p.name)))
    own = [s for s in sorted(sizes) if s not in others]  # the sizes no one-size model takes from it
    if own:
        above = [o for o in others if o > own[0]]
        reads = f"only the faces of {own[0]}-{above[0] - 1} px" if above else f"the faces of {own[0]} px and more"
    else:
        reads = ("none of the faces predict classifies (`train --init default` and `evaluate --weights default` "
                 "read it)")
    routing = (f"; with the one-size models below shipped beside it ({', '.join(map(str, others))} px), this model "
               f"reads {reads}" if others else "")
    card = CARD.format(
        routing=routing,
        name=ckpt["model"]["name"],
        params=sum(p.numel() for p in model.parameters()),
        gflops=count_flops(model, int(ckpt["input"]["channels"]), int(model.input_size)) / 1e9,
        channels=ckpt["input"]["channels"],
        sizes=sorted(int(v) for v in ckpt["input"]["lr_sizes"].values()),
        scales=ckpt["input"]["scales"],
        hr=ckpt["input"]["hr_size"],
        working=model.input_size,
        classes=", ".join(ckpt["classes"]),
        command="gmenet train --preset ferplus"
        + ("" if sorted(ckpt["input"]["scales"]) == sorted(preset["prepare"]["scales"])
           else " --scales " + ",".join(str(s) for s in ckpt["input"]["scales"]))
        + "".join(f" {d}" for d in differs),
        schedule=cfg["optim"]["schedule"],
        ema=cfg["train"]["ema"],
        shift=cfg["augment"]["shift"],
        zoom=cfg["augment"]["scale"],
        rotate=cfg["augment"]["rotate"],
        kd=(
            f", logit KD weight {cfg['distill']['kd_weight']} (temperature {cfg['distill']['kd_temperature']})"
            if cfg["distill"]["kd_weight"] > 0
            else ""
        ),
        teacher=(ckpt.get("teacher") or {}).get("model", "none"),
        teacher_acc=f"Valid accuracy {ckpt['teacher']['val_metric'] * 100:.2f}% on HR"
        if ckpt.get("teacher", {}).get("val_metric")
        else "",
        askd=cfg["distill"]["weight"],
        objective=(f"logit-adjusted loss, tau {cfg['train']['logit_adjust']} (rare classes get a margin; predict "
                   "reads the raw logits)" if cfg["train"].get("logit_adjust") else "plain cross-entropy"),
        epochs=cfg["train"]["epochs"],
        optim=cfg["optim"]["name"],
        lr=cfg["optim"]["lr"],
        batch=cfg["train"]["batch_size"],
        date=dt.date.today().isoformat(),
        machine=args.machine,
        split=report["split"],
        table="\n".join(rows),
        parity=max(info["max_abs_diff"], 1e-6),
        onnx_mb=onnx_mb,
        agree=agree,
        cross=cross_lines(args.cross),
    )
    write_card(out.parent / "MODEL_CARD.md", card, read_card(out.parent / "MODEL_CARD.md")[1])
    print(f"wrote {out.with_suffix('.onnx')} ({onnx_mb:.1f} MB) and {out.parent / 'MODEL_CARD.md'}")


def cross_lines(path: str | None) -> str:
    """The card's lines for a cross_eval.py --json report (faces from another source), or nothing."""
    if not path:
        return ""
    report = json.loads(Path(path).read_text())
    rows = [f"{size if size == 'full' else size + ' px'}: {100 * r['accuracy']:.1f}% / "
            f"{100 * r['mean_class_accuracy']:.1f}%" for size, r in report["sizes"].items()]
    return (f"\n- **On faces from another source** ({Path(report['folder']).name}, never trained on; "
            f"`benchmarks/cross_eval.py`, {len(report['scored_classes'])} classes; accuracy / mean class accuracy, "
            f"this model alone): {'; '.join(rows)}.\n")


def read_card(path: Path) -> tuple[str, dict[str, str]]:
    """MODEL_CARD.md as (the default model's part, {one-size model name: its section})."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    main, *rest = text.split(ONE_SIZE_HEAD)
    return main, {r.split("\n", 1)[0]: ONE_SIZE_HEAD + r for r in rest}


def write_card(path: Path, main: str, sections: dict[str, str]) -> None:
    """The default model's part, then each one-size model's section (default-<N>px, by N)."""
    path.write_text(
        main.rstrip("\n")
        + "\n"
        + "".join(sections[k].rstrip("\n") + "\n" for k in sorted(sections, key=lambda k: int(k[8:-2]))),
        encoding="utf-8",
    )


def agreement(model, onnx_path: Path, store_path: Path, split: str, scales: list[int]) -> str:
    """How often the .onnx (onnxruntime) and its float16 checkpoint in PyTorch (built once in main) give the
    same label on the store's faces (each LR scale; scale 1: the HR faces, for a teacher)."""
    import numpy as np
    import torch

    from gmenet_cli.data.store import Store
    from gmenet_cli.ortmodel import OnnxModel

    if not (store_path / "manifest.json").is_file():
        return "label agreement with the .pt not measured (store not found)"
    faces = Store(store_path).split(split)
    model.eval()
    onnx = OnnxModel(onnx_path)
    same = total = 0
    views = {1: faces.hr, **faces.lowres}
    for scale, lowres in sorted((s, v) for s, v in views.items() if s in scales):
        for i in range(0, faces.count, 512):
            x = np.array(lowres[i : i + 512])  # a writable copy of the memory-mapped rows
            with torch.no_grad():
                ref = model(torch.from_numpy(x).float() / 255.0).argmax(1).numpy()
            same += int((onnx.logits(x).argmax(1) == ref).sum())
            total += len(x)
    print(f"{onnx_path.name} and the float16 checkpoint it was made from agree on {same}/{total} {split} faces")
    return (f"the same label as the float16 checkpoint it was made from on {same:,} of {total:,} FERPlus {split} "
            f"faces at x{'/x'.join(map(str, sorted(scales)))}")


if __name__ == "__main__":
    main()
