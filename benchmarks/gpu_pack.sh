#!/usr/bin/env bash
# Copy what benchmarks/gpu_check.sh needs from ../shared into .gpudata/ (ignored by git), small enough to
# travel to a lent GPU machine (the device tool carries at most 64 MiB): the FERPlus Valid folder and the
# first 15,000 Train faces, with their label rows.
#   bash benchmarks/gpu_pack.sh && then run with carry [".gpudata"]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${FERPLUS:-../shared/data/ferplus}
grep -qx '/.gpudata/' .git/info/exclude 2>/dev/null || echo '/.gpudata/' >> .git/info/exclude
rm -rf .gpudata/ferplus && mkdir -p .gpudata/ferplus/FER2013Train
cp -r "$SRC/FER2013Valid" .gpudata/ferplus/
head -n 15000 "$SRC/FER2013Train/label.csv" > .gpudata/ferplus/FER2013Train/label.csv
cut -d, -f1 .gpudata/ferplus/FER2013Train/label.csv | (cd "$SRC/FER2013Train" && xargs cp -t "$OLDPWD/.gpudata/ferplus/FER2013Train")
du -sh --apparent-size .gpudata
