"""Handing a request to the workers. Services enqueue by the task's registered name, so the
workflow never imports the task module (and the task module may import the workflow freely)."""

from __future__ import annotations

import logging

from celery import current_app

from stackgan_django.conf import app_settings

logger = logging.getLogger(__name__)

GENERATE_TASK = "stackgan_django.generate"


def enqueue(request_id: int, countdown: float | None = None) -> None:
    """Send the task. A broker failure is logged, not raised: the row stays QUEUED and the sweeper
    sends it again, because the database, not the broker, is the source of truth."""
    try:
        current_app.send_task(GENERATE_TASK, args=[request_id], queue=app_settings.QUEUE, countdown=countdown)
    except Exception:
        logger.exception("could not enqueue request %s; the sweeper will retry", request_id)
