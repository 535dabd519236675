"""Webhooks on approve and revoke: each event for each configured endpoint is a WebhookDelivery row,
sent after the review commits by a Celery task (enqueued by name) that records every attempt and
retries with a growing delay. The body is signed with HMAC-SHA256 of ``<timestamp>.<body>``."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import io
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.db import transaction
from django.utils import timezone

from stackgan_django.conf import app_settings
from stackgan_django.models import Asset, WebhookAttempt, WebhookDelivery

logger = logging.getLogger(__name__)

DELIVER_WEBHOOK_TASK = "stackgan_django.deliver_webhook"
WEBHOOK_EVENTS = ("asset.approved", "asset.revoked")
SIGNATURE_HEADER = "X-Stackgan-Signature"


@dataclass(frozen=True)
class DeliveryOutcome:
    state: str
    retry_in: float | None = None  # seconds until the next attempt, when one is due


def _endpoints_for(event: str) -> list[dict[str, Any]]:
    endpoints = []
    for endpoint in app_settings.WEBHOOKS or []:
        # Only http(s): the check stackgan_django.E114 names any other entry.
        url = str(endpoint.get("url", "")) if isinstance(endpoint, dict) else ""
        if url.startswith(("http://", "https://")) and event in endpoint.get("events", WEBHOOK_EVENTS):
            endpoints.append(endpoint)
    return endpoints


def queue_webhooks(event: str, asset: Asset, note: str = "") -> list[WebhookDelivery]:
    """Inside the review's transaction: one delivery row per endpoint, sent once it commits."""
    created = []
    for endpoint in _endpoints_for(event):
        payload = {"event": event, "occurred_at": timezone.now().isoformat(timespec="seconds"),
                   "asset": {"id": str(asset.public_id), "state": asset.state,
                             "url": f"/api/v1/assets/{asset.public_id}/"}}
        if event == "asset.revoked":
            payload["reason"] = note or ""
        delivery = WebhookDelivery.objects.create(event=event, asset=asset, url=endpoint["url"], payload=payload)
        transaction.on_commit(lambda pk=delivery.pk: send_delivery(pk))
        created.append(delivery)
    return created


def send_delivery(delivery_id: int, countdown: float | None = None) -> None:
    """A broker failure is logged, not raised: the row stays pending and can be sent again."""
    try:
        current_app.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=app_settings.WEBHOOK_QUEUE,
                              countdown=countdown)
    except Exception:
        logger.exception("could not enqueue webhook delivery %s", delivery_id)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _secret_for(url: str) -> str | None:
    """The secret of the endpoint configured for ``url`` now, or None when none is (any more)."""
    for endpoint in app_settings.WEBHOOKS or []:
        if isinstance(endpoint, dict) and endpoint.get("url") == url and endpoint.get("secret"):
            return str(endpoint["secret"])
    return None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the failure it is for a webhook: urllib would otherwise follow it
    to any host, internal addresses and plain http included, with the signature headers."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx status


class _DeadlineReader(io.RawIOBase):
    """The response side of a connection with one deadline for the whole reply: a socket timeout
    bounds each read, so a receiver sending its status line a byte at a time would otherwise hold
    the webhook worker for as long as it liked."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the receiver did not answer within the webhook timeout")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """A connected socket whose replies are read through _DeadlineReader; everything else is the socket."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock, self._deadline = sock, deadline

    def makefile(self, mode: str = "r", *args: Any, **kwargs: Any):
        if "w" in mode:
            return self._sock.makefile(mode, *args, **kwargs)
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _with_deadline(connection_class: type[http.client.HTTPConnection]):
    class Connection(connection_class):
        def connect(self) -> None:
            super().connect()  # TLS included, for https: the deadline wraps the socket that is read
            if isinstance(self.timeout, (int, float)):
                self.sock = _DeadlineSocket(self.sock, time.monotonic() + self.timeout)
    return Connection


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_with_deadline(http.client.HTTPConnection), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_with_deadline(http.client.HTTPSConnection), req, context=self._context)


# WEBHOOK_TIMEOUT_SECONDS bounds connecting, and then the whole reply (status line and headers).
_opener = urllib.request.build_opener(_NoRedirects, _DeadlineHTTPHandler, _DeadlineHTTPSHandler)


def deliver_webhook(delivery_id: int) -> DeliveryOutcome:
    """One attempt: POST, record it, and say whether (and when) to try again. Safe to run twice."""
    delivery = WebhookDelivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.state != WebhookDelivery.State.PENDING:
        return DeliveryOutcome(delivery.state if delivery else "unknown")
    secret = _secret_for(delivery.url)
    started, began = timezone.now(), time.perf_counter()
    status_code, error = None, ""
    if secret is None:
        # The endpoint was removed from STACKGAN["WEBHOOKS"] (or its URL changed) since the event:
        # its events no longer go there, and never signed with an empty key.
        error = "The endpoint is no longer configured in STACKGAN['WEBHOOKS']; not sent."
    else:
        body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "stackgan-django-webhooks",
                   "X-Stackgan-Event": delivery.event, "X-Stackgan-Delivery": str(delivery.pk),
                   SIGNATURE_HEADER: signature(secret, timestamp, body)}
        try:
            request = urllib.request.Request(delivery.url, data=body, headers=headers, method="POST")
            with _opener.open(request, timeout=app_settings.WEBHOOK_TIMEOUT_SECONDS) as response:
                status_code = response.status
        except urllib.error.HTTPError as exc:
            status_code, error = exc.code, f"HTTP {exc.code}"
            if 300 <= exc.code < 400:
                error += f": redirects are not followed (Location: {exc.headers.get('Location', '')})"[:2000]
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"[:2000]
    duration_ms = int((time.perf_counter() - began) * 1000)
    succeeded = status_code is not None and 200 <= status_code < 300
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        delivery.attempts += 1
        WebhookAttempt.objects.create(delivery=delivery, number=delivery.attempts, started_at=started,
                                      status_code=status_code, error=error, duration_ms=duration_ms)
        if succeeded:
            delivery.state, delivery.delivered_at = WebhookDelivery.State.DELIVERED, timezone.now()
        elif secret is None or delivery.attempts >= app_settings.WEBHOOK_MAX_ATTEMPTS:
            delivery.state = WebhookDelivery.State.FAILED
        delivery.save(update_fields=["attempts", "state", "delivered_at"])
    if delivery.state == WebhookDelivery.State.PENDING:
        return DeliveryOutcome(delivery.state, retry_in=min(3600.0, app_settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** (delivery.attempts - 1)))
    return DeliveryOutcome(delivery.state)
