"""Celery tasks: thin. Each takes a primary key (or nothing) and calls the workflow; the services
decide every state change, and enqueue by the registered name so they never import this module."""

from __future__ import annotations

from celery import shared_task

from stackgan_django.services import GENERATE_TASK, MAINTENANCE_TASK, process_request, run_maintenance


@shared_task(name=GENERATE_TASK, ignore_result=True)
def generate(request_id: int) -> str:
    """Generate the images of one request. Safe to run twice: the services make it idempotent."""
    return process_request(request_id)


@shared_task(name=MAINTENANCE_TASK, ignore_result=True)
def maintain() -> dict[str, list[int]]:
    """Celery beat's periodic work: recover requests whose worker died, send the outbox."""
    return run_maintenance()
