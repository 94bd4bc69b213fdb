#!/usr/bin/env bash
# The prepared GPU check (issue 13), about 5-8 minutes on one GPU. Run it where a GPU is lent, from the
# repository root, with the FERPlus copy in $FERPLUS (default ../shared/data/ferplus, or .gpudata/ferplus
# made by benchmarks/gpu_pack.sh when ../shared does not travel):
#
#   bash benchmarks/gpu_check.sh            # writes its figures to $OUT (default gpu-check/) and stdout
#
# Steps: the gpu-marked tests; one epoch of teacher_s2 and of the gmenet_s2 student on FERPlus in bf16 with
# the shipped recipe (images/s from results.csv); the loader alone (faces/s); evaluate on CUDA against the
# CPU (accuracy must agree to 0.1 points); predict --device cuda on the example photos.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
FERPLUS=${FERPLUS:-$( [ -d .gpudata/ferplus ] && echo .gpudata/ferplus || echo ../shared/data/ferplus )}
PY=${PY:-python3}
GM="$PY -m gmenet_cli"
WORK=$(mktemp -d)
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

log "$(date -u +%FT%TZ) $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))')"
log "gpu-marked tests"
$PY -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 | tail -3 | tee -a "$OUT/summary.txt"

log "prepare $FERPLUS"
(cd "$WORK" && $GM prepare --src ferplus --root "$OLDPWD/$FERPLUS" --scale 2,4,8 --out store 2>&1 | tail -2)

for bs in 512; do
  log "one teacher epoch, bf16, batch $bs"
  (cd "$WORK" && $GM distill-teacher --preset ferplus --data store --device cuda --epochs 1 -b $bs --name t -q 2>&1 | tail -3)
  log "one student epoch, bf16, batch $bs"
  (cd "$WORK" && $GM train --preset ferplus --data store --device cuda --epochs 1 -b $bs --name s -q \
      --teacher runs/distill-teacher/t/weights/best.pt 2>&1 | tail -3)
done
cp "$WORK/runs/distill-teacher/t/results.csv" "$OUT/teacher_results.csv"
cp "$WORK/runs/train/s/results.csv" "$OUT/student_results.csv"
$PY - "$WORK" <<'EOF' | tee -a "$OUT/summary.txt"
import csv, sys
for kind, run in (("teacher", "distill-teacher/t"), ("student", "train/s")):
    row = list(csv.DictReader(open(f"{sys.argv[1]}/runs/{run}/results.csv")))[-1]
    print(f"{kind}: {float(row['images_per_s']):,.0f} images/s, epoch {float(row['epoch_time_s']):.1f} s, val_acc {float(row['val_acc']):.4f}")
EOF

log "loader alone"
$PY benchmarks/train_speed.py --store "$WORK/store" --loader-only 2>&1 | tail -6 | tee -a "$OUT/summary.txt"

log "evaluate: CUDA against CPU"
for dev in cuda cpu; do
  (cd "$WORK" && $GM evaluate --weights runs/train/s/weights/best.pt --device $dev --json --out ev-$dev > "ev-$dev.json")
done
$PY - "$WORK" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
a, b = (json.load(open(f"{sys.argv[1]}/ev-{d}.json"))["models"][0]["results"] for d in ("cuda", "cpu"))
for x, y in zip(a, b):
    diff = abs(x["accuracy"] - y["accuracy"]) * 100
    print(f"{x['view']}: cuda {x['accuracy']*100:.2f} cpu {y['accuracy']*100:.2f} diff {diff:.2f} points "
          + ("OK" if diff <= 0.1 else "OVER 0.1"))
EOF

log "predict --device cuda"
$GM predict examples/astronaut.png examples/crowd.jpg --weights "$WORK/runs/train/s/weights/best.pt" --device cuda --json \
  | $PY -c "import sys, json; r=[json.loads(l) for l in sys.stdin]; print(len(r), 'faces;', r[0]['label'], r[0]['confidence'])" \
  | tee -a "$OUT/summary.txt"
log "done $(date -u +%FT%TZ)"
