#!/usr/bin/env bash
# Train the full StackGAN-v2 (ngf 64, 64 -> 128 -> 256 px) from a training bundle on a GPU machine that has
# only python3 with torch, numpy, Pillow, safetensors, tqdm and transformers (no Django, no network, no
# text encoder), within a wall-clock budget, then evaluate; everything lands in OUT.
#
#   bash scripts/train-accelerator.sh BUNDLE OUT [--time-budget 480] [more options of generator.accelerator]
#
# Make the bundle here first (about 30 MB for twemoji):  python -m generator.bundle pack data/twemoji --out bundle
# Bring OUT back and promote it with:                     python scripts/promote-run.py OUT/model
# Re-running the same command resumes an interrupted run (at most a minute of training is lost).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 BUNDLE OUT [--time-budget SECONDS] ..." >&2; exit 2; fi
BUNDLE=$1; OUT=$2; shift 2
PY=${PY:-python3}
exec "$PY" "$(dirname "$0")/train-accelerator.py" "$BUNDLE" "$OUT" --time-budget "${TIME_BUDGET:-480}" "$@"
