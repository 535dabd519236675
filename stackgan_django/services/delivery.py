"""Handing a request to the workers, outbox style: the database records what still has to be sent
(``sent_at`` empty on a QUEUED row), a send marks it, and whatever the broker could not take is sent
again by the periodic maintenance task or on the next submission. Services enqueue by the task's
registered name, so the workflow never imports the task module."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import current_app
from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone

from stackgan_django.conf import app_settings
from stackgan_django.models import GenerationRequest

logger = logging.getLogger(__name__)

GENERATE_TASK = "stackgan_django.generate"
MAINTENANCE_TASK = "stackgan_django.maintain"
# A request committed this recently may still be on its way to the broker from the web process
# that submitted it (transaction.on_commit); the outbox leaves it to that send.
SEND_IN_FLIGHT_SECONDS = 5
# Sent but not started after RESEND_AFTER_SECONDS while the broker's queue is not empty: the message
# may simply be waiting its turn, so it is re-sent only after this many times that delay (a queue
# that never empties must not hide a lost message for ever; a needless copy is a cheap skip).
RESEND_WHEN_QUEUE_BUSY_FACTOR = 20
OUTBOX_BATCH = 200


def enqueue(request_id: int, countdown: float | None = None) -> bool:
    """Send the task and mark the row as sent. A broker failure is logged, not raised: the row
    stays in the outbox (``sent_at`` empty) and the maintenance task or the next submission sends
    it, because the database, not the broker, is the source of truth. Returns whether it was sent."""
    try:
        current_app.send_task(GENERATE_TASK, args=[request_id], queue=app_settings.QUEUE, countdown=countdown)
    except Exception as exc:  # any broker or transport error: the outbox keeps the request
        logger.warning("could not enqueue request %s (%s: %s); it stays in the outbox and is sent when the broker "
                       "is back", request_id, type(exc).__name__, exc)
        return False
    # Delivery bookkeeping, not a state change, so no audit event: the row stays QUEUED. A row a
    # worker already took is RUNNING and not touched.
    try:
        GenerationRequest.objects.filter(pk=request_id, state=GenerationRequest.State.QUEUED).update(sent_at=timezone.now())
    except DatabaseError:  # the message is out; unmarked, the row is at worst sent once more (a harmless skip)
        logger.warning("request %s was sent but could not be marked as sent", request_id, exc_info=True)
    return True


def queue_depth(queue: str | None = None) -> int | None:
    """Messages waiting in the broker's queue (0 when the queue does not exist), None when the
    broker cannot be asked."""
    queue = queue or app_settings.QUEUE
    try:
        with current_app.connection_for_write() as connection:
            channel = connection.default_channel
            try:
                return channel.queue_declare(queue=queue, passive=True).message_count
            except Exception:  # passive declare of a queue that holds nothing: kombu raises "not found"
                return 0
    except Exception as exc:
        logger.warning("could not read the depth of queue %s: %s", queue, exc)
        return None


def send_pending_requests(now: datetime | None = None, include_lost: bool = True, limit: int = OUTBOX_BATCH) -> list[int]:
    """Send QUEUED requests that never reached the broker, and (``include_lost``) those the broker
    took but no worker started long after: a broker that restarted without persistence loses
    them. Stops at the first send that fails (the broker is still away). Returns the ids sent."""
    now = now or timezone.now()
    unsent = Q(sent_at__isnull=True, queued_at__lt=now - timedelta(seconds=SEND_IN_FLIGHT_SECONDS))
    condition = unsent
    if include_lost:
        resend_after = timedelta(seconds=app_settings.RESEND_AFTER_SECONDS)
        lost = Q(sent_at__lt=now - resend_after * RESEND_WHEN_QUEUE_BUSY_FACTOR)
        old_sends = GenerationRequest.objects.filter(state=GenerationRequest.State.QUEUED, sent_at__lt=now - resend_after)
        if old_sends.exists() and queue_depth() in (0, None):
            # Nothing is waiting in the broker, yet these were sent a while ago and not started:
            # their messages are gone. (A duplicate would be harmless: start_request skips it.)
            lost = Q(sent_at__lt=now - resend_after)
        condition |= lost
    pending = list(GenerationRequest.objects.filter(state=GenerationRequest.State.QUEUED).filter(condition)
                   .order_by("queued_at", "pk").values_list("pk", flat=True)[:limit])
    sent = []
    for pk in pending:
        if enqueue(pk) is False:
            break
        sent.append(pk)
    if sent:
        logger.info("outbox: sent %d pending request(s): %s", len(sent), sent)
    return sent
