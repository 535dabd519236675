#!/usr/bin/env bash
# Fine-tune the shipped model on your own images and register the result as a model version that
# compliance staff can review and activate in the admin. One command:
#   bash scripts/finetune.sh IMAGES_DIR IMAGES.csv NAME [STEPS]
# The CSV has columns file,captions,license,source,attribution,training_permission (captions
# separated by '|'). Rows with problems are reported and left out; the data policy must accept
# the set before training starts.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n '2,8p' "$0"; exit 2; }
IMAGES=$1; CSV=$2; NAME=$3; STEPS=${4:-2000}
PY=.venv/bin/python
[ -x "$PY" ] || make install
DATA=data/$NAME
$PY manage.py migrate --noinput -v0
$PY -m generator.datasets import-csv --images "$IMAGES" --csv "$CSV" --out "$DATA"
$PY manage.py train_model --data "$DATA" --init-from models/default --output "runs/$NAME" --steps "$STEPS" \
    --batch-size 16 --checkpoint-every 250 --sample-every 250 --diff-augment color,translation,cutout --matching-weight 2
$PY -m policies build-near-copy-index "$DATA" --out "runs/$NAME/near_copies.json"
$PY manage.py register_model "runs/$NAME" --name "$NAME" --notes "fine-tuned from models/default on $DATA"
echo "registered model version $NAME; sample grid: runs/$NAME/samples.png; activate it in the admin (Model versions)."
