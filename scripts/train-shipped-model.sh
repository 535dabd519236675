#!/usr/bin/env bash
# The shipped model's CPU recipe, resumable: re-running the script continues every phase where it stopped
# (each phase's --steps counts from 0 across resumes, so raising a phase's steps extends it).
#
#   P4_STEPS=0 bash scripts/train-shipped-model.sh       # continue phase 5 from models/default (already through 4)
#   bash scripts/train-shipped-model.sh                  # phases 4-5 from START (default models/default)
#   FROM_SCRATCH=1 bash scripts/train-shipped-model.sh   # phases 1-3 first (how models/default began)
#   P4_STEPS=1000 P5_STEPS=4000 RUNS=/work/runs/shipped bash scripts/train-shipped-model.sh
#
# Cost on the idle 2-core CPU (30 Nov 2026): phases 1-3 about two hours; phase 4 0.4-0.7 s a step (800 steps:
# 9 minutes); phase 5 3.4-3.6 s a step (3,000 steps: about 3 hours). The shipped model has 334 steps of phase 5.
# The script does not install: the result is copied to models/default only by scripts/promote-run.py,
# which evaluates it against the shipped model first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/twemoji}
RUNS=${RUNS:-runs/shipped}
START=${START:-models/default}
P1_STEPS=${P1_STEPS:-4500}; P2_STEPS=${P2_STEPS:-500}; P3_STEPS=${P3_STEPS:-400}
P4_STEPS=${P4_STEPS:-800}; P5_STEPS=${P5_STEPS:-3000}
# DiffAugment keeps the discriminator from memorising two thousand images; the matching loss (AttnGAN's
# DAMSM, sentence level) teaches the text conditioning far sooner than the adversarial loss alone.
COMMON=(--batch-size 16 --checkpoint-every 100 --sample-every 500 --quiet
        --diff-augment color,translation,cutout --matching-weight 2
        --sample-caption "a grinning face, flat style" --sample-caption "a cat face, flat style"
        --sample-caption "a red apple, flat style" --sample-caption "a slice of pizza, flat style"
        --sample-caption "a red rose, flat style" --sample-caption "a blue heart, flat style")

[ -f "$DATA/manifest.jsonl" ] || $PY -m generator.datasets prepare twemoji --out "$DATA"
# The data policy decides whether this set may be trained on at all.
$PY -m policies check-dataset "$DATA"

if [ "${FROM_SCRATCH:-0}" = 1 ]; then
  $PY -m generator.train --data "$DATA" --output "$RUNS/p1-64" --variant v2 --branches 1 --ngf 32 --ndf 32 \
      --steps "$P1_STEPS" "${COMMON[@]}"
  # A new branch starts from random weights; the colour-consistency term (StackGAN++ section 4.3) makes
  # it agree with the trained scale below within a few hundred steps instead of a few thousand.
  $PY -m generator.train --data "$DATA" --output "$RUNS/p2-128" --init-from "$RUNS/p1-64" --branches 2 \
      --steps "$P2_STEPS" --colour-weight 10 "${COMMON[@]}"
  $PY -m generator.train --data "$DATA" --output "$RUNS/p3-256" --init-from "$RUNS/p2-128" --branches 3 \
      --steps "$P3_STEPS" --colour-weight 10 --weights-dtype float16 "${COMMON[@]}"
  START="$RUNS/p3-256"
fi

# Phase 4: the 64 px branch alone (the higher scales are not even computed) with MSGAN's mode-seeking
# term, so the seeds of one caption stop collapsing onto one picture; every scale above inherits it.
# P4_STEPS=0 skips it: phase 5 then continues from START (e.g. the shipped model, already through phase 4).
P5_FROM="$START"
if [ "$P4_STEPS" != 0 ]; then
  $PY -m generator.train --data "$DATA" --output "$RUNS/p4-64-ms" --init-from "$START" --branches 3 \
      --train-branches 0 --mode-seeking-weight 1 --steps "$P4_STEPS" "${COMMON[@]}"
  P5_FROM="$RUNS/p4-64-ms"
fi
# Phase 5: the 128 and 256 px branches, where the shipped model lost most of its quality, for many
# more epochs: the 64 px stage is frozen, so a step costs no backward pass through it and no D64.
$PY -m generator.train --data "$DATA" --output "$RUNS/p5-256" --init-from "$P5_FROM" --branches 3 \
    --train-branches 1,2 --mode-seeking-weight 1 --colour-weight 10 --steps "$P5_STEPS" \
    --weights-dtype float16 "${COMMON[@]}"
echo "trained: $RUNS/p5-256 (evaluate and promote with scripts/promote-run.py $RUNS/p5-256)"
