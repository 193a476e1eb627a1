#!/usr/bin/env bash
# Rate-distortion of rawdiff (fast and diffusion paths) against JPEG, WebP, JPEG XL and AVIF
# on the corpus' test split: results.json, report.md, RD plots and side_by_side.png.
#
#   benchmarks/rd_eval.sh [MODEL_DIR] [OUT_DIR] [more `rawdiff eval` options, e.g. --steps 1 4]
#
# Defaults: models/default, build/rd-eval. Needs `make setup` and `make data`.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/default}
OUT=${2:-build/rd-eval}
shift $(( $# < 2 ? $# : 2 ))
# shellcheck disable=SC1091
source build/env.sh
exec nice -n 10 rawdiff eval --model "$MODEL" data/corpus/test.txt --out "$OUT" "$@"
