"""Cross-dataset check: any labelled folder (`<class>/*.jpg`) through `gmenet predict`'s own code path.

Each image is read, cropped and classified exactly as `gmenet predict --no-detect FILE` does (or with the
detector, `--detect`, as bare `gmenet predict FILE` does: the most confident face counts, an image without
a face counts as wrong), at full size and shrunk to each `--sizes` px (the longer side, area resampling,
written losslessly and read back, as a user's small image would be). Reported per size: accuracy, mean class
accuracy over the classes with at least `--min-count` faces (smaller classes are too few to score, but the
model may still predict them), per-class recall and the confusion matrix.

    python benchmarks/cross_eval.py ../shared/data/muxspace-val                     # the shipped default
    python benchmarks/cross_eval.py ../shared/data/muxspace-val --weights runs/train/exp/weights/best.pt
    python benchmarks/cross_eval.py DIR --sizes full,24,12,6 --json out.json --markdown
    python benchmarks/cross_eval.py DIR --only '_[0-9]{4}[.]jpg$' --per-file rows.csv   # one sub-source, every file

The folder is only read: use it for validation, never for training.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmenet_cli.data.imageio import read_image  # noqa: E402
from gmenet_cli.evaluate import metrics_from_confusion  # noqa: E402
from gmenet_cli.predict import pipeline  # noqa: E402
from gmenet_cli.predict.classify import load_classifier  # noqa: E402
from gmenet_cli.predict.detect import make_detector  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def labelled_files(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(file, class index) for every image under root/<class>/; folders not named after a class are refused."""
    if not root.is_dir():
        sys.exit(f"error: {root} is not a folder of <class>/ image folders")
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name not in classes:
            sys.exit(f"error: {sub} is not one of the model's classes ({', '.join(classes)})")
        out += [(f, classes.index(sub.name)) for f in sorted(sub.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not out:
        sys.exit(f"error: no images under {root}/<class>/")
    return out


def shrink(files: list[tuple[Path, int]], size: int, into: Path) -> list[str]:
    """Copies of the images with their longer side `size` px (area resampling), as lossless PNGs."""
    out = []
    for i, (f, _) in enumerate(files):
        img = read_image(f, 3)
        h, w = img.shape[:2]
        k = size / max(h, w)
        small = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        path = into / f"{i:06d}.png"
        cv2.imwrite(str(path), small)
        out.append(str(path))
    return out


def predictions(paths: list[str], clf, detector, margin: float) -> tuple[list[int], list]:
    """The class index `gmenet predict` gives each file (-1: no face / unreadable), and its probabilities."""
    best: dict[str, tuple[float, int, list]] = {}
    for item, results in pipeline.run(paths, clf, detector, margin, every=1, batch_size=256):
        for r in results:
            if "label" in r and r.get("detector_score", 1.0) >= best.get(item.file, (-1.0,))[0]:
                probs = [r["probs"][c] for c in clf.classes]
                best[item.file] = (r.get("detector_score", 1.0), clf.classes.index(r["label"]), probs)
    found = [best.get(p) for p in paths]
    return [f[1] if f else -1 for f in found], [f[2] if f else None for f in found]


def score(truth: list[int], pred: list[int], classes: list[str], scored: list[int], probs=None) -> dict:
    """Metrics over the faces of the scored classes; a missing face (-1) is a wrong answer ('no face')."""
    k = len(classes)
    conf = np.zeros((k, k + 1), dtype=np.int64)  # last column: no face found
    for t, p in zip(truth, pred):
        conf[t, p if p >= 0 else k] += 1
    sub = conf[scored][:, :k]
    square = np.zeros((k, k), dtype=np.int64)
    square[scored] = conf[scored][:, :k]
    m = metrics_from_confusion(square, classes)
    n = int(conf[scored].sum())
    recall = {classes[i]: m["per_class"][classes[i]]["recall"] for i in scored}
    ece = None
    if probs is not None:  # calibration error over the scored faces the model read (confidence as predict gives it)
        from gmenet_cli.calibrate import ece as expected_calibration_error

        keep = [i for i, (t, p) in enumerate(zip(truth, probs)) if t in scored and p is not None]
        if keep:
            ece = expected_calibration_error(np.array([probs[i] for i in keep]), np.array([truth[i] for i in keep]))
    return {"faces": n, "no_face": int(conf[scored][:, k].sum()), "ece": ece,
            "accuracy": float(np.trace(sub[:, scored]) / n) if n else 0.0,
            "mean_class_accuracy": float(np.mean(list(recall.values()))) if recall else 0.0,
            "recall": recall, "confusion": {classes[i]: conf[i].tolist() for i in scored}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--weights", action="append", help="model(s), as gmenet predict --weights; default: the shipped "
                                                       "models")
    ap.add_argument("--sizes", default="full,24,12,6", help="comma list: full and/or face sizes in px")
    ap.add_argument("--min-count", type=int, default=100, help="classes with fewer faces are not scored")
    ap.add_argument("--detect", action="store_true", help="find the face with the default detector (as bare predict)")
    ap.add_argument("--margin", type=float, default=0.1, help="with --detect: predict's --margin")
    ap.add_argument("--no-tta", action="store_true")
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables (for BENCHMARKS.md)")
    ap.add_argument("--only", help="score only the files whose name matches this regular expression (re.search)")
    ap.add_argument("--skip", help="leave out the files whose name matches this regular expression")
    ap.add_argument("--per-file", type=Path, help="write one CSV row per image and size (size, file, truth, "
                                                  "label, confidence) to look into the mistakes")
    args = ap.parse_args(argv)

    clf = load_classifier(args.weights, args.device, tta=not args.no_tta)
    detector = make_detector("yunet", None) if args.detect else None
    files = labelled_files(args.folder, clf.classes)
    for pattern, keep in ((args.only, True), (args.skip, False)):
        if pattern:
            import re

            try:
                rx = re.compile(pattern)
            except re.error as e:
                sys.exit(f"error: {pattern!r} is not a regular expression: {e}")
            files = [(f, c) for f, c in files if bool(rx.search(f.name)) == keep]
    if not files:
        sys.exit("error: no image left after --only / --skip")
    truth = [c for _, c in files]
    counts = np.bincount(truth, minlength=len(clf.classes))
    scored = [i for i in range(len(clf.classes)) if counts[i] >= args.min_count]
    report = {"folder": str(args.folder), "weights": clf.path, "detect": args.detect, "tta": clf.tta,
              "only": args.only, "skip": args.skip,
              "scored_classes": [clf.classes[i] for i in scored], "sizes": {}}
    rows = []
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        with tempfile.TemporaryDirectory() as tmp:
            paths = [str(f) for f, _ in files] if size == "full" else shrink(files, int(size), Path(tmp))
            pred, probs = predictions(paths, clf, detector, args.margin)
        report["sizes"][size] = score(truth, pred, clf.classes, scored, probs)
        rows += [(size, str(f), clf.classes[t], clf.classes[p] if p >= 0 else "no_face",
                  f"{max(pr):.4f}" if pr is not None else "")
                 for (f, t), p, pr in zip(files, pred, probs)]

    if args.per_file:
        import csv

        with open(args.per_file, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["size", "file", "truth", "label", "confidence"])
            w.writerows(rows)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    names = report["scored_classes"]
    print(f"{args.folder}: {len(files)} faces, scored classes ({len(names)}): {', '.join(names)}; "
          f"weights {clf.path}{'; detector' if args.detect else ''}")
    if args.markdown:
        print("\n| size | accuracy | mean class acc | " + " | ".join(names) + " |")
        print("|---|---|---|" + "---|" * len(names))
    for size, r in report["sizes"].items():
        rec = [r["recall"][c] for c in names]
        if args.markdown:
            print(f"| {size} | {r['accuracy']:.1%} | {r['mean_class_accuracy']:.1%} | "
                  + " | ".join(f"{v:.0%}" for v in rec) + " |")
        else:
            print(f"{size:>5}: acc {r['accuracy']:.1%}  mca {r['mean_class_accuracy']:.1%}  ece {r['ece']:.3f}  "
                  + "  ".join(f"{c} {v:.0%}" for c, v in zip(names, rec))
                  + (f"  (no face: {r['no_face']})" if r["no_face"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
