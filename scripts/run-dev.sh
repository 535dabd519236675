#!/usr/bin/env bash
# Web server and one Celery worker for local use; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p var
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"  # development pages; settings default to off
$PY -m celery -A config worker -Q gpu -c 1 --pool solo -l info --without-gossip --without-mingle \
    --without-heartbeat >var/worker.log 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null' EXIT INT TERM
echo "worker started (pid $WORKER, log var/worker.log); admin at http://127.0.0.1:8000/admin/"
$PY manage.py runserver 127.0.0.1:8000
