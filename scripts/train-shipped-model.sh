#!/usr/bin/env bash
# Train the shipped model on CPU in three resumable phases (64 px, grow to 128, grow to 256) and copy
# the result to models/default. Re-running resumes where it stopped. Steps per phase can be set:
#   P1_STEPS=4500 P2_STEPS=500 P3_STEPS=400 bash scripts/train-shipped-model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DATA=${DATA:-data/twemoji}
RUNS=${RUNS:-runs/shipped}
P1_STEPS=${P1_STEPS:-4500}; P2_STEPS=${P2_STEPS:-500}; P3_STEPS=${P3_STEPS:-400}
# DiffAugment keeps the discriminator from memorising two thousand images; the matching loss (AttnGAN's
# DAMSM, sentence level) teaches the text conditioning far sooner than the adversarial loss alone.
COMMON=(--batch-size 16 --checkpoint-every 250 --sample-every 500 --quiet
        --diff-augment color,translation,cutout --matching-weight 2
        --sample-caption "a grinning face, flat style" --sample-caption "a red apple, flat style"
        --sample-caption "a dog face, flat style" --sample-caption "an automobile, flat style"
        --sample-caption "a blue heart, flat style" --sample-caption "a birthday cake, flat style")

[ -f "$DATA/manifest.jsonl" ] || $PY -m generator.datasets prepare twemoji --out "$DATA"
# The data policy decides whether this set may be trained on at all.
$PY -m policies check-dataset "$DATA"

$PY -m generator.train --data "$DATA" --output "$RUNS/p1-64" --variant v2 --branches 1 --ngf 32 --ndf 32 \
    --steps "$P1_STEPS" "${COMMON[@]}"
# A new branch starts from random weights; the colour-consistency term (StackGAN++ section 4.3) makes
# it agree with the trained scale below within a few hundred steps instead of a few thousand.
$PY -m generator.train --data "$DATA" --output "$RUNS/p2-128" --init-from "$RUNS/p1-64" --branches 2 \
    --steps "$P2_STEPS" --colour-weight 10 "${COMMON[@]}"
$PY -m generator.train --data "$DATA" --output "$RUNS/p3-256" --init-from "$RUNS/p2-128" --branches 3 \
    --steps "$P3_STEPS" --colour-weight 10 --weights-dtype float16 "${COMMON[@]}"

mkdir -p models/default
cp "$RUNS/p3-256"/{config.json,generator.safetensors,lineage.json,samples.png,samples.json} models/default/
$PY -m policies build-near-copy-index "$DATA" --out models/default/near_copies.json
echo "shipped model written to models/default"
