"""The tamper-evident audit log: append an event (inside the caller's transaction), verify the
hash chain, and anchor its head outside the database.

The chain shows an edited or removed event in the middle, but not the newest events deleted (or
the chain rewritten from some point on by someone with database access): what is left is still a
valid chain. Anchors close that door: the maintenance task appends the head's sequence and hash to
a file outside the database (``STACKGAN["AUDIT_ANCHOR_FILE"]``) and to the log every
``AUDIT_ANCHOR_SECONDS`` when it moved, and verification checks every anchor against the chain."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from stackgan_django.models import AuditEvent

logger = logging.getLogger(__name__)

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
    anchored: int | None = None  # anchors checked, when an anchor file was given

    def __str__(self) -> str:
        if self.ok:
            anchors = f"; all {self.anchored} anchors found" if self.anchored is not None else ""
            return f"audit chain verified: {self.checked} events, no broken link{anchors}"
        if self.broken_at is None:
            return f"audit chain NOT verified: {self.problem} ({self.checked} events checked)"
        return f"audit chain BROKEN at event #{self.broken_at}: {self.problem} ({self.checked} events checked before it)"


def verify_chain(anchor_file: str | os.PathLike | None = None) -> ChainReport:
    """Recompute every hash and link; name the first event whose content or link does not match.
    With ``anchor_file``, every anchor in it must name an event of the chain with the same hash."""
    report = _verify_links()
    if not report.ok or anchor_file is None:
        return report
    return _verify_anchors(Path(anchor_file), report)


def _verify_links() -> ChainReport:
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


def read_anchors(anchor_file: str | os.PathLike) -> list[dict[str, Any]]:
    """The anchors of a file, oldest first; a file that does not exist has none. A line that is not
    an anchor is an error: the file is evidence, and a damaged one must be looked at."""
    path = Path(anchor_file)
    if not path.exists():
        return []
    anchors = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            anchors.append(_parse_anchor(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}, line {number}: not an audit anchor ({exc})") from exc
    return anchors


def _parse_anchor(line: str) -> dict[str, Any]:
    """One line of an anchor file; raises ValueError, KeyError or TypeError when it is not one."""
    anchor = json.loads(line)
    return {"sequence": int(anchor["sequence"]), "hash": str(anchor["hash"]), "at": str(anchor.get("at", ""))}


def _verify_anchors(path: Path, report: ChainReport) -> ChainReport:
    try:
        anchors = read_anchors(path)
    except (OSError, ValueError) as exc:
        return ChainReport(False, report.checked, None, f"the anchor file cannot be read: {exc}")
    hashes = dict(AuditEvent.objects.filter(sequence__in=[a["sequence"] for a in anchors])
                  .values_list("sequence", "hash"))
    for anchor in anchors:
        found = hashes.get(anchor["sequence"])
        if found is None:
            return ChainReport(False, report.checked, anchor["sequence"],
                               f"event #{anchor['sequence']}, anchored at {anchor['at']}, is missing: the log was "
                               f"cut short after #{report.checked}")
        if found != anchor["hash"]:
            return ChainReport(False, report.checked, anchor["sequence"],
                               f"event #{anchor['sequence']} is not the one anchored at {anchor['at']}: the chain "
                               "was rewritten from there on")
    return ChainReport(True, report.checked, anchored=len(anchors))


def anchor_head(anchor_file: str | os.PathLike, min_seconds: float, now: datetime | None = None) -> dict[str, Any] | None:
    """Append the chain's head to the anchor file (and the log) when it moved since the last anchor
    and at least ``min_seconds`` have passed; the anchor written, or None."""
    head = AuditEvent.objects.order_by("-sequence").values("sequence", "hash").first()
    if head is None:
        return None
    path = Path(anchor_file)
    now = now or timezone.now()
    last = _last_anchor(path)
    if last is not None:
        if last["sequence"] == head["sequence"] and last["hash"] == head["hash"]:
            return None
        try:
            if (now - datetime.fromisoformat(last["at"])).total_seconds() < min_seconds:
                return None
        except (TypeError, ValueError):
            pass  # an anchor without a readable time: anchor again
    anchor = {"sequence": head["sequence"], "hash": head["hash"], "at": now.isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(anchor, sort_keys=True) + "\n"
    # One write in append mode: lines of concurrent writers never interleave.
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
    logger.info("audit chain head anchored: #%s %s", anchor["sequence"], anchor["hash"])
    return anchor


def _last_anchor(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return _parse_anchor(line)
        except (ValueError, KeyError, TypeError):
            continue
    return None
