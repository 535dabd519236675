"""Celery tasks: thin. Each takes a primary key (or nothing) and calls the workflow; the services
decide every state change, and enqueue by the registered name so they never import this module."""

from __future__ import annotations

from celery import shared_task

from stackgan_django.services import DELIVER_WEBHOOK_TASK, GENERATE_TASK, MAINTENANCE_TASK, process_request, run_maintenance
from stackgan_django.services import deliver_webhook as deliver_webhook_attempt


@shared_task(name=GENERATE_TASK, ignore_result=True)
def generate(request_id: int) -> str:
    """Generate the images of one request. Safe to run twice: the services make it idempotent."""
    return process_request(request_id)


@shared_task(name=MAINTENANCE_TASK, ignore_result=True)
def maintain() -> dict[str, list[int]]:
    """Celery beat's periodic work: recover requests whose worker died, send the outbox."""
    return run_maintenance()


@shared_task(name=DELIVER_WEBHOOK_TASK, bind=True, ignore_result=True, max_retries=None)
def deliver_webhook(self, delivery_id: int) -> str:
    """One webhook attempt; the services say whether and when to try again (each attempt is recorded)."""
    outcome = deliver_webhook_attempt(delivery_id)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.state
