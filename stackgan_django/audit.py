"""The tamper-evident audit log: append an event (inside the caller's transaction) and verify the
hash chain."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from stackgan_django.models import AuditEvent

GENESIS_HASH = "0" * 64
MAX_RACE_RETRIES = 20


def event_hash(previous_hash: str, sequence: int, created_at: str, actor: str, action: str,
               object_type: str, object_id: str, data: Any) -> str:
    payload = json.dumps(
        [previous_hash, sequence, created_at, actor, action, object_type, object_id, data],
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _hash_of(event: AuditEvent) -> str:
    return event_hash(
        event.previous_hash, event.sequence, event.created_at.isoformat(), event.actor, event.action,
        event.object_type, event.object_id, event.data,
    )


def actor_name(user: Any) -> str:
    if user is None:
        return "system"
    if isinstance(user, str):
        return user
    return f"user:{user.get_username()}" if getattr(user, "is_authenticated", False) else "anonymous"


def record_event(action: str, obj: models.Model | None, actor: Any = None, **data: Any) -> AuditEvent:
    """Append one event. Must run inside the transaction that makes the change it records."""
    # Round-trip through JSON so the stored data hashes the same when read back.
    data = json.loads(json.dumps(data, default=str))
    object_type = obj._meta.model_name if obj is not None else ""
    object_id = str(obj.pk) if obj is not None else ""
    for _ in range(MAX_RACE_RETRIES):
        head = AuditEvent.objects.select_for_update().order_by("-sequence").first()
        sequence = head.sequence + 1 if head else 1
        previous = head.hash if head else GENESIS_HASH
        created_at = timezone.now()
        event = AuditEvent(
            sequence=sequence, created_at=created_at, actor=actor_name(actor), action=action,
            object_type=object_type, object_id=object_id, data=data, previous_hash=previous,
        )
        event.hash = _hash_of(event)
        try:
            with transaction.atomic():
                event.save()
            return event
        except IntegrityError:
            continue  # another writer appended first: build on the new head
    raise RuntimeError("could not append to the audit log: too much contention")


def record_events(events: list[tuple[str, models.Model | None, Any, dict[str, Any]]]) -> list[AuditEvent]:
    """Append several events, each (action, object, actor, data), in this order and in one INSERT:
    what ``record_event`` does once per event, for a worker that records a step of many requests
    in one transaction (a batch's claims). Must run inside that transaction. The chain is the same
    as appending them one by one: each links to the one before it."""
    if not events:
        return []
    prepared = [(action, obj._meta.model_name if obj is not None else "", str(obj.pk) if obj is not None else "",
                 actor_name(actor), json.loads(json.dumps(data, default=str))) for action, obj, actor, data in events]
    for _ in range(MAX_RACE_RETRIES):
        head = AuditEvent.objects.select_for_update().order_by("-sequence").first()
        sequence = head.sequence if head else 0
        previous = head.hash if head else GENESIS_HASH
        created_at = timezone.now()
        rows = []
        for action, object_type, object_id, actor, data in prepared:
            sequence += 1
            event = AuditEvent(sequence=sequence, created_at=created_at, actor=actor, action=action,
                               object_type=object_type, object_id=object_id, data=data, previous_hash=previous)
            event.hash = previous = _hash_of(event)
            rows.append(event)
        try:
            with transaction.atomic():
                AuditEvent.objects.bulk_create(rows)
            return rows
        except IntegrityError:
            continue  # another writer appended first: build on the new head
    raise RuntimeError("could not append to the audit log: too much contention")


@dataclass
class ChainReport:
    ok: bool
    checked: int
    broken_at: int | None = None
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain verified: {self.checked} events, no broken link"
        return f"audit chain BROKEN at event #{self.broken_at}: {self.problem} ({self.checked} events checked before it)"


def verify_chain() -> ChainReport:
    """Recompute every hash and link; name the first event whose content or link does not match."""
    previous_hash = GENESIS_HASH
    expected_sequence = 1
    checked = 0
    for event in AuditEvent.objects.order_by("sequence").iterator(chunk_size=2000):
        if event.sequence != expected_sequence:
            return ChainReport(False, checked, expected_sequence, f"event #{expected_sequence} is missing")
        if event.previous_hash != previous_hash:
            return ChainReport(False, checked, event.sequence, "does not link to the event before it")
        if _hash_of(event) != event.hash:
            return ChainReport(False, checked, event.sequence, "its content does not match its hash (edited)")
        previous_hash = event.hash
        expected_sequence += 1
        checked += 1
    return ChainReport(True, checked)
