#!/usr/bin/env bash
# Classify every face in a folder of photos and count the expressions (needs jq).
# Usage: examples/pipeline.sh photos/ [extra gmenet predict options]
set -eu  # no pipefail: predict exits 1 when some photo has no face, the counts still stand
dir=${1:?usage: $0 PHOTO_DIR [gmenet predict options]}
shift
find "$dir" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) \
  | gmenet predict - --json "$@" \
  | jq -r .label \
  | sort | uniq -c | sort -rn
