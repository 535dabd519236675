#!/usr/bin/env bash
# The full StackGAN-v2 configuration (ngf 64, ndf 64, 64/128/256 px) on one GPU, sized to finish
# within about ten minutes on an H100/H200-class card: one joint run at batch 24 on the prepared
# twemoji set, then promoted to models/default if it is allowed and better. Run where CUDA is available:
#   bash scripts/train-gpu.sh            (STEPS=4000 by default; each step is 24 images at 3 scales)
set -euo pipefail
cd "$(dirname "$0")/.."
# On the embedded defaults (no DJANGO_SECRET_KEY) the commands below run as development, as `make run`
# does: with DEBUG off, manage.py refuses the published development key (stackgan_django.E004).
[ -n "${DJANGO_SECRET_KEY:-}" ] || export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/twemoji}
OUT=${OUT:-runs/gpu-256}
STEPS=${STEPS:-4000}
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use scripts/train-shipped-model.sh on CPU')"
[ -f "$DATA/manifest.jsonl" ] || $PY -m generator.datasets prepare twemoji --out "$DATA"
$PY manage.py train_model --data "$DATA" --output "$OUT" --variant v2 --branches 3 --ngf 64 --ndf 64 \
    --batch-size 24 --steps "$STEPS" --checkpoint-every 500 --sample-every 500 --weights-dtype float16 --quiet \
    --diff-augment color,translation,cutout --matching-weight 2 --mode-seeking-weight 1 --precision bf16 --channels-last \
    --sample-caption "a grinning face, flat style" --sample-caption "a red apple, flat style" \
    --sample-caption "a dog face, flat style" --sample-caption "an automobile, flat style"
# Into models/default only if the data policy accepts its lineage and it beats the shipped model.
$PY scripts/promote-run.py "$OUT" --data "$DATA"
