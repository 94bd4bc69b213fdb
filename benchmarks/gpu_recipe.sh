#!/usr/bin/env bash
# Issue 14 on a GPU: the m-size teacher and student (teacher_m2, gmenet_m2) with the ferplus recipe, for as
# many epochs as fit in about 8 minutes, and FERPlus Valid accuracy per face size. Where a GPU is lent, from
# the repository root (FERPlus in $FERPLUS or .gpudata/ferplus, see benchmarks/gpu_pack.sh):
#   bash benchmarks/gpu_recipe.sh
# A one-epoch probe of each model sets the epochs: BUDGET seconds (default 420) split between the two.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-gpu-recipe}; mkdir -p "$OUT"
FERPLUS=${FERPLUS:-$( [ -d .gpudata/ferplus ] && echo .gpudata/ferplus || echo ../shared/data/ferplus )}
PY=${PY:-python3}; GM="$PY -m gmenet_cli"; export BUDGET=${BUDGET:-420}; BS=${BS:-512}
WORK=$(mktemp -d); ROOT=$PWD
cd "$WORK"
$GM prepare --src ferplus --root "$ROOT/$FERPLUS" --scale 2,4,8 --out store 2>&1 | tail -1
common="--preset ferplus --data store --device cuda -b $BS -q"
$GM distill-teacher $common --model teacher_m2 --epochs 1 --name probe_t 2>&1 | tail -1
$GM train $common --model gmenet_m2 --epochs 1 --name probe_s --teacher runs/distill-teacher/probe_t/weights/best.pt 2>&1 | tail -1
read TE SE < <($PY - <<'PYEOF'
import csv, os
t = float(list(csv.DictReader(open("runs/distill-teacher/probe_t/results.csv")))[-1]["epoch_time_s"]) + 3
s = float(list(csv.DictReader(open("runs/train/probe_s/results.csv")))[-1]["epoch_time_s"]) + 3
budget = float(os.environ.get("BUDGET", "420"))
print(max(1, int(budget * t / (t + s) / t)), max(1, int(budget * s / (t + s) / s)))
PYEOF
)
echo "teacher epochs $TE, student epochs $SE" | tee "$ROOT/$OUT/summary.txt"
$GM distill-teacher $common --model teacher_m2 --epochs "$TE" --name t 2>&1 | tail -2
$GM train $common --model gmenet_m2 --epochs "$SE" --name s --teacher runs/distill-teacher/t/weights/best.pt 2>&1 | tail -2
$GM evaluate --weights runs/train/s/weights/best.pt --compare runs/distill-teacher/t/weights/best.pt --scales 1,2,4,8 \
  --device cuda --json --out ev > "$ROOT/$OUT/metrics.json"
cp runs/distill-teacher/t/results.csv "$ROOT/$OUT/teacher_results.csv"; cp runs/train/s/results.csv "$ROOT/$OUT/student_results.csv"
$PY - "$ROOT/$OUT/metrics.json" <<'PYEOF' | tee -a "$ROOT/$OUT/summary.txt"
import json, sys
for m in json.load(open(sys.argv[1]))["models"]:
    print(m["model"], " ".join(f"{r['face_px']}px {r['accuracy']*100:.2f}%/{r['mean_class_accuracy']*100:.2f}%" for r in m["results"]))
PYEOF
