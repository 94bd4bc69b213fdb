"""A uniform weight average ("model soup", Wortsman et al., ICML 2022) of gmenet checkpoints of one model:
a shipped model and its fine-tunes. Every floating-point tensor (BatchNorm statistics too) is averaged;
integer buffers come from the last checkpoint, and so does the rest of the checkpoint (model, classes,
input spec), without its training state and its temperatures: run `gmenet calibrate` on the result.

    python benchmarks/soup.py OUT.pt gmenet_cli/weights/default-12px.onnx runs/train/ft12_s1/weights/best.pt ...
    gmenet calibrate --weights OUT.pt --data prepared/ferplus-x2-4-8
"""

from __future__ import annotations

import argparse
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the averaged checkpoint to write (.pt)")
    ap.add_argument("weights", nargs="+", help="checkpoints (.pt or gmenet .onnx) of the same model")
    args = ap.parse_args()
    from gmenet_cli import checkpoint
    from gmenet_cli.errors import CheckpointError

    if len(args.weights) < 2:
        sys.exit("soup.py: give at least two checkpoints to average")
    try:
        ckpts = [checkpoint.load(p) for p in args.weights]
    except CheckpointError as e:
        sys.exit(f"soup.py: {e}")
    names = {c["model"]["name"] for c in ckpts}
    keys = [set(c["state_dict"]) for c in ckpts]
    if len(names) != 1 or any(k != keys[0] for k in keys):
        sys.exit(f"soup.py: the checkpoints are not one model ({', '.join(sorted(names))})")
    out = dict(ckpts[-1])
    state = {}
    for k, v in out["state_dict"].items():
        if v.is_floating_point():
            state[k] = sum(c["state_dict"][k].float() for c in ckpts) / len(ckpts)  # float32, also from float16 .onnx
        else:
            state[k] = v
    out["state_dict"] = state
    for k in ("train_state_dict", "optimizer", "scheduler", "scaler", "ema_state", "calibration",
              "format", "format_version", "gmenet_version", "torch_version"):
        out.pop(k, None)
    out["soup_of"] = list(args.weights)
    checkpoint.save(args.out, out)
    print(f"wrote {args.out}: the average of {len(ckpts)} checkpoints of {names.pop()}; "
          f"next: gmenet calibrate --weights {args.out}")


if __name__ == "__main__":
    main()
