#!/usr/bin/env bash
# Fine-tune the shipped model on your own images and register the result as a model version that
# compliance staff can review and activate in the admin. One command:
#   bash scripts/finetune.sh [--force] IMAGES_DIR IMAGES.csv NAME [STEPS]
# NAME names data/NAME and runs/NAME, so it must be a plain name (letters, digits, - and _), and
# neither may exist already unless --force (or FORCE=1) says to write over them: data/twemoji is
# the shipped training set whose manifest hash models/default/lineage.json records.
# The CSV has columns file,captions,license,source,attribution,training_permission (captions
# separated by '|'). Rows with problems are reported and left out; the data policy must accept
# the set before training starts.
set -euo pipefail
cd "$(dirname "$0")/.."
# On the embedded defaults (no DJANGO_SECRET_KEY) the commands below run as development, as `make run`
# does: with DEBUG off, manage.py refuses the published development key (stackgan_django.E004).
[ -n "${DJANGO_SECRET_KEY:-}" ] || export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
FORCE=${FORCE:-0}
if [ "${1:-}" = "--force" ]; then FORCE=1; shift; fi
[ $# -ge 3 ] || { sed -n '2,11p' "$0"; exit 2; }
IMAGES=$1; CSV=$2; NAME=$3; STEPS=${4:-2000}
if ! [[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9_-]*$ ]]; then
    echo "error: NAME must be a plain name of letters, digits, - and _ (got '$NAME')" >&2
    exit 2
fi
DATA=data/$NAME
OVERWRITE=()
if [ "$FORCE" = 1 ]; then
    OVERWRITE=(--overwrite)
else
    for existing in "$DATA" "runs/$NAME"; do
        if [ -e "$existing" ]; then
            echo "error: $existing already exists; choose another NAME, or pass FORCE=1 (make) / --force to write over it" >&2
            exit 2
        fi
    done
fi
PY=.venv/bin/python
[ -x "$PY" ] || make install
$PY manage.py migrate --noinput -v0
# import_images is import-csv with the data policy applied per row (rows it refuses are left out).
$PY manage.py import_images --images "$IMAGES" --csv "$CSV" --out "$DATA" "${OVERWRITE[@]}"
$PY manage.py train_model --data "$DATA" --init-from models/default --output "runs/$NAME" --steps "$STEPS" \
    --batch-size 16 --checkpoint-every 250 --sample-every 250 --diff-augment color,translation,cutout --matching-weight 2
$PY -m policies build-near-copy-index "$DATA" --out "runs/$NAME/near_copies.json"
$PY manage.py register_model "runs/$NAME" --name "$NAME" --notes "fine-tuned from models/default on $DATA"
echo "registered model version $NAME; sample grid: runs/$NAME/samples.png; activate it in the admin (Model versions)."
