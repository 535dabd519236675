#!/usr/bin/env bash
# Web server, one Celery worker for generation, and the maintenance worker with Celery beat
# (recovers requests whose worker died, sends requests the broker could not take); Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p var
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"  # development pages; settings default to off
$PY -m celery -A config worker -Q gpu -c 1 --pool solo -l info --without-gossip --without-mingle \
    --without-heartbeat >var/worker.log 2>&1 &
WORKER=$!
# One process is enough on a laptop: a small solo worker for the maintenance and webhook queues with beat
# embedded (-B). In production run `celery -A config beat` once per site and the maintenance worker
# beside the web tier (see the README's "Running in production").
$PY -m celery -A config worker -Q stackgan-maintenance,webhooks -c 1 --pool solo -B -l info --without-gossip \
    --without-mingle --without-heartbeat -n maintenance@%h >var/maintenance.log 2>&1 &
MAINTENANCE=$!
trap 'kill $WORKER $MAINTENANCE 2>/dev/null; wait $WORKER $MAINTENANCE 2>/dev/null' EXIT INT TERM
echo "worker started (pid $WORKER, log var/worker.log), maintenance + beat (pid $MAINTENANCE, log var/maintenance.log)"
echo "admin at http://127.0.0.1:8000/admin/"
$PY manage.py runserver 127.0.0.1:8000
