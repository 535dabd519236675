"""The worker's side of a request: take it (QUEUED -> RUNNING, with a lease), render, run the output
policy, stamp and store each image, and finish, fail, defer or retry it; and the periodic recovery
of requests whose worker died. ``process_request`` is the whole pipeline as a plain function: the
Celery task, the benchmarks and the tests all call it."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.db.models import Q
from django.utils import timezone
from PIL import Image

from policies import NearCopyIndex, NearCopyIndexError, Verdict
from stackgan_django.audit import record_event, record_events
from stackgan_django.conf import app_settings
from stackgan_django.disclosure import requester_message
from stackgan_django.governance import current_policies
from stackgan_django.models import Asset, GenerationRequest, ModelVersion, PolicyDecision, asset_storage
from stackgan_django.services import delivery
from stackgan_django.services.decisions import decision_rows, store_decisions
from stackgan_django.services.errors import ExplainedFailure, TransitionError, WorkflowError

logger = logging.getLogger(__name__)
State = GenerationRequest.State
T = TypeVar("T")

# The errors of a database connection that is gone (server restarted, network cut): a fresh
# connection may succeed where this one cannot.
CONNECTION_ERRORS = (OperationalError, InterfaceError)
# How long a state change keeps trying to reach the database before giving up; the request's lease
# then lapses and the maintenance task recovers it, so giving up loses nothing.
RECONNECT_SECONDS = 45.0

WORKER_DIED_REASON = ("The worker stopped while making these images (it was stopped, ran out of memory or lost its "
                      "database connection) on each of {attempts} attempts. Press retry to try again; if it keeps "
                      "happening, an administrator should check the workers.")


class UnknownRequest(WorkflowError):
    pass


class LeaseLost(WorkflowError):
    """Another worker took the request over (this one's lease lapsed): this attempt must store nothing."""


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def asset_file_name(request: GenerationRequest, index: int) -> str:
    """The one storage name of a request's image ``index``: the same on every attempt, so a retry
    overwrites its own file instead of leaving a renamed copy beside it. Keyed by the site's secret,
    so the name reveals nothing that leads to another asset's file (not the request id, not the index)."""
    from django.utils.crypto import salted_hmac

    digest = salted_hmac("stackgan_django.asset_file_name", f"{request.public_id}:{index}", algorithm="sha256").hexdigest()[:32]
    prefix = (app_settings.STORAGE_PREFIX or "").strip("/")
    return "/".join(part for part in (prefix, digest[:2], f"{digest}.png") if part)


def with_fresh_connection(action: Callable[[], T], what: str = "a database step") -> T:
    """Run ``action``; when the database connection is gone (PostgreSQL restarted, a network cut),
    close it, open a fresh one and try again for up to RECONNECT_SECONDS. Without this, a failure
    handler reuses the dead connection and the request stays RUNNING with no reason given."""
    deadline = time.monotonic() + RECONNECT_SECONDS
    delay = 0.2
    while True:
        try:
            return action()
        except CONNECTION_ERRORS as exc:
            connection = connections[DEFAULT_DB_ALIAS]
            if connection.in_atomic_block or time.monotonic() + delay > deadline:
                raise  # inside a caller's transaction only the caller can start again
            logger.warning("%s lost the database connection (%s); reconnecting", what, exc)
            close_connection_quietly()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def close_connection_quietly() -> None:
    """Drop this thread's default connection so the next query opens a fresh one."""
    try:
        connections[DEFAULT_DB_ALIAS].close()
    except Exception:  # closing a dead connection may itself fail; it is gone either way
        logger.debug("closing a dead connection failed", exc_info=True)


def _locked(request_id: int) -> GenerationRequest:
    request = GenerationRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is None:
        raise UnknownRequest(f"There is no generation request with id {request_id!r}.")
    return request


def _locked_running(request_id: int, attempt: int | None) -> GenerationRequest:
    """The row locked, provided it is RUNNING and (with ``attempt``) still held by that attempt: a
    worker whose lease lapsed and was taken over may change nothing."""
    request = _locked(request_id)
    if request.state != State.RUNNING:
        raise TransitionError(f"request {request_id} is {request.state}, not running")
    if attempt is not None and request.attempts != attempt:
        raise LeaseLost(f"request {request_id} was taken over (attempt {request.attempts}, this is {attempt})")
    return request


def _lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=app_settings.LEASE_SECONDS)


def lease_lapsed(request: GenerationRequest, now: datetime | None = None) -> bool:
    """A RUNNING request lost its worker: the lease was not renewed in time, or the request ran
    past REQUEST_DEADLINE_SECONDS (a wedged worker whose heartbeat still beats stops renewing then)."""
    now = now or timezone.now()
    if request.started_at is not None and now - request.started_at > timedelta(seconds=app_settings.REQUEST_DEADLINE_SECONDS):
        return True
    if request.lease_expires_at is None:  # rows started before leases existed
        return request.started_at is None or now - request.started_at > timedelta(seconds=app_settings.LEASE_SECONDS)
    return request.lease_expires_at <= now


def _lapsed_filter(now: datetime) -> Q:
    lease = timedelta(seconds=app_settings.LEASE_SECONDS)
    deadline = timedelta(seconds=app_settings.REQUEST_DEADLINE_SECONDS)
    return (Q(lease_expires_at__lte=now) | Q(started_at__lt=now - deadline)
            | Q(lease_expires_at__isnull=True, started_at__lt=now - lease) | Q(started_at__isnull=True))


def _give_up(request: GenerationRequest, now: datetime, actor: str, reason: str) -> None:
    """RUNNING -> FAILED for good, with a reason the editor can read; files no asset owns go."""
    request.state = State.FAILED
    request.error = reason[:2000]
    request.finished_at = now
    request.lease_expires_at = None
    request.save(update_fields=["state", "error", "finished_at", "lease_expires_at"])
    record_event("request.failed", request, actor, attempt=request.attempts, error=reason[:500])
    transaction.on_commit(lambda pk=request.pk: remove_unowned_files(pk))


WITHDRAWN_MODEL_REASON = ("Model version {name} was deactivated before this request was generated, so no images "
                          "were drawn with it; retry the request to generate it with the active model.")


def _withdrawn_model(request: GenerationRequest, now: datetime) -> None:
    """QUEUED or RUNNING -> FAILED because its model version is no longer active."""
    reason = WITHDRAWN_MODEL_REASON.format(name=request.model_version.name)
    request.state = State.FAILED
    request.error = reason
    request.finished_at = now
    request.lease_expires_at = None
    request.save(update_fields=["state", "error", "finished_at", "lease_expires_at"])
    record_event("request.failed", request, "worker", attempt=request.attempts, error=reason,
                 model_version=request.model_version.name, reason="model version inactive")
    transaction.on_commit(lambda pk=request.pk: remove_unowned_files(pk))


def start_request(request_id: int) -> GenerationRequest | None:
    """QUEUED -> RUNNING with a fresh lease, or take over a RUNNING request whose lease lapsed (its
    worker died). Returns None when there is nothing to do (done, denied, failed, or running
    elsewhere under a live lease), so a duplicate message is harmless."""
    # A plain read first: the messages of requests a batch already took find them done or running
    # under a live lease, and need no lock (on SQLite, no write lock) to learn it. Anything that
    # may need work is decided again below, under the row lock.
    seen = GenerationRequest.objects.filter(pk=request_id).only("state", "started_at", "lease_expires_at").first()
    if seen is not None and (seen.state in (State.DONE, State.FAILED, State.POLICY_DENIED)
                             or (seen.state == State.RUNNING and not lease_lapsed(seen))):
        return None
    with transaction.atomic():
        request = _locked(request_id)
        now = timezone.now()
        if request.state == State.RUNNING:
            if not lease_lapsed(request, now):
                return None
            if request.attempts >= app_settings.MAX_ATTEMPTS:
                _give_up(request, now, "worker", WORKER_DIED_REASON.format(attempts=request.attempts))
                return None
            record_event("request.taken_over", request, "worker", attempt=request.attempts,
                         previous_worker=request.worker, reason="lease lapsed")
        elif request.state != State.QUEUED:
            return None
        if request.model_version_id is not None and not request.model_version.is_active:
            # Compliance withdrew the model after the request was queued: it must not draw images.
            # Failing now (not retrying) frees the editor to retry, which re-targets the active model.
            _withdrawn_model(request, now)
            return None
        request.state = State.RUNNING
        request.started_at = now
        request.attempts += 1
        request.lease_expires_at = _lease_until(now)
        request.worker = worker_identity()[:200]
        request.save(update_fields=["state", "started_at", "attempts", "lease_expires_at", "worker"])
        record_event("request.started", request, "worker", attempt=request.attempts, worker=request.worker)
        return request


class LeaseKeeper:
    """Renews the leases of one worker's attempts from a background thread while it renders and
    stamps: one request's, or every request of a batch drawn in one forward pass.

    It stops renewing when the batch passes REQUEST_DEADLINE_SECONDS (a hung generator then loses
    its leases and is taken over, also on the solo pool where Celery's time limits do not apply).
    A request whose row no longer belongs to its attempt is marked lost (``has_lost``; ``lost``
    is the first request's) and no longer renewed; the others are renewed as before. A request
    that is ``release``d (finished, failed) is no longer renewed either."""

    def __init__(self, request_id: int, attempt: int, others: dict[int, int] | None = None):
        self.request_id = request_id
        self.attempt = attempt
        self.lost = threading.Event()
        self._leases: dict[int, int] = {request_id: attempt, **(others or {})}
        self._lost: set[int] = set()
        self._guard = threading.Lock()  # the worker releases while the thread renews
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{request_id}", daemon=True)
        self._deadline = time.monotonic() + app_settings.REQUEST_DEADLINE_SECONDS

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def has_lost(self, request_id: int) -> bool:
        with self._guard:
            return request_id in self._lost

    def release(self, request_id: int) -> None:
        """Stop renewing one request's lease (its attempt is over)."""
        with self._guard:
            self._leases.pop(request_id, None)

    def hold(self, request_id: int, attempt: int) -> None:
        """Renew one more request's lease too (the next batch of an overlapped task)."""
        with self._guard:
            self._leases[request_id] = attempt

    def renew(self) -> bool:
        """One renewal of every held lease; False when another attempt owns one of the rows now
        (that one is marked lost). Delivery bookkeeping, not a state change, hence a plain update
        and no audit event; one UPDATE for the whole batch while every row is still held."""
        with self._guard:
            leases = dict(self._leases)
        if not leases:
            return True
        held = Q()
        for pk, attempt in leases.items():
            held |= Q(pk=pk, attempts=attempt)
        rows = GenerationRequest.objects.filter(held, state=State.RUNNING)
        if rows.update(lease_expires_at=_lease_until(timezone.now())) == len(leases):
            return True
        still = set(rows.values_list("pk", flat=True))
        gone = set(leases) - still
        with self._guard:
            for pk in gone:
                self._leases.pop(pk, None)
                self._lost.add(pk)
        for pk in gone:
            logger.warning("request %s attempt %s: lease lost, another worker owns it", pk, leases[pk])
        if self.request_id in gone:
            self.lost.set()
        return False

    def _run(self) -> None:
        interval = max(app_settings.LEASE_SECONDS / 3, 0.2)
        try:
            while not self._stop.wait(interval):
                if time.monotonic() > self._deadline:
                    logger.error("request %s ran past its deadline; its lease is no longer renewed", self.request_id)
                    return
                try:
                    self.renew()
                except CONNECTION_ERRORS as exc:
                    # The database is away: try again on a fresh connection next beat. If it stays
                    # away past the lease, the request is taken over, which is what should happen.
                    logger.warning("request %s: could not renew the lease (%s)", self.request_id, exc)
                    close_connection_quietly()
                with self._guard:
                    if not self._leases:
                        return
        finally:
            connections.close_all()  # this thread's own connections


def claim_waiting_requests(first: GenerationRequest, batch_size: int | None = None) -> list[GenerationRequest]:
    """Start other waiting requests to draw in the same forward pass as ``first`` (already started):
    QUEUED, same model version, oldest first, until the batch holds ``batch_size`` images
    (GENERATION_BATCH_SIZE). Each is started as ``start_request`` starts one: RUNNING, an attempt
    counted, a lease, a ``request.started`` event (naming the batch's first request). Returns them.

    Only first attempts are taken (never a request that failed, was deferred or lost its worker
    before): such a one runs alone, from its own message, so a request that kills its worker
    cannot take a batch down twice. Rows another worker is claiming are skipped
    (``skip_locked`` on PostgreSQL); the claim itself is an UPDATE conditional on the row still
    being QUEUED with no attempt, so two workers never take the same row on a database that
    ignores ``skip_locked`` (SQLite, where IMMEDIATE transactions also serialise the claims)."""
    room = (batch_size if batch_size is not None else app_settings.GENERATION_BATCH_SIZE) - first.num_images
    if room <= 0 or first.model_version_id is None or first.attempts != 1:
        return []
    return _claim(first.model_version_id, room, first.pk)


def _claim(model_version_id: int, room: int, batch_with: int) -> list[GenerationRequest]:
    """Start waiting first-attempt requests of a model version, oldest first, up to ``room`` images
    (``claim_waiting_requests``; also the next batch of an overlapped task, ``process_request``)."""
    claimed: list[GenerationRequest] = []
    with transaction.atomic():
        # A withdrawn model's requests are not drawn (start_request fails them with the reason). Only
        # the request rows are locked (of=self): FOR UPDATE would otherwise lock the joined model
        # version's row too, and a second worker's skip_locked would then skip every request of it.
        candidates = list(GenerationRequest.objects.select_for_update(skip_locked=True, of=("self",))
                          .filter(state=State.QUEUED, model_version_id=model_version_id, attempts=0, error="",
                                  model_version__is_active=True)
                          .exclude(pk=batch_with).order_by("queued_at", "pk")[:room])
        now = timezone.now()
        lease, worker = _lease_until(now), worker_identity()[:200]
        for request in candidates:
            if request.num_images > room:
                continue  # a smaller one further on may still fit
            taken = GenerationRequest.objects.filter(pk=request.pk, state=State.QUEUED, attempts=0).update(
                state=State.RUNNING, started_at=now, attempts=1, lease_expires_at=lease, worker=worker)
            if not taken:
                continue  # another worker started it between the read and this update
            request.state, request.started_at, request.attempts = State.RUNNING, now, 1
            request.lease_expires_at, request.worker = lease, worker
            claimed.append(request)
            room -= request.num_images
            if room <= 0:
                break
        # The claims' audit events in one INSERT (a chain link each, as if appended one by one).
        record_events([("request.started", request, "worker", {"attempt": 1, "worker": worker, "batch_with": batch_with})
                       for request in claimed])
    return claimed


@dataclass
class GeneratedOutput:
    """One generated image after the output policy; ``signed`` is the stamped PNG (None if denied)."""

    index: int
    seed: int
    image: Image.Image
    verdict: Verdict
    signed: bytes | None = None
    mark_id: int | None = None
    provenance: dict[str, Any] | None = None


def new_mark_id() -> int:
    """A 32-bit watermark id not yet used by any asset."""
    return new_mark_ids(1)[0]


def new_mark_ids(count: int) -> list[int]:
    """``count`` distinct 32-bit watermark ids not yet used by any asset, in one query (per request
    rather than per image)."""
    chosen: list[int] = []
    while len(chosen) < count:
        candidates = {secrets.randbelow(2**32 - 1) + 1 for _ in range(count - len(chosen))} - set(chosen)
        used = set(Asset.objects.filter(mark_id__in=candidates).values_list("mark_id", flat=True))
        chosen += sorted(candidates - used)
    return chosen


def _read_request_decisions(requests: list[GenerationRequest]) -> None:
    """``_request_decisions`` of every request of a batch in one query instead of one each."""
    found: dict[int, list[dict[str, Any]]] = {request.pk: [] for request in requests}
    for request_id, rule_id, outcome, stage in (PolicyDecision.objects.filter(request_id__in=list(found))
                                                .order_by("pk").values_list("request_id", "rule_id", "outcome", "stage")):
        found[request_id].append({"rule_id": rule_id, "outcome": outcome, "stage": stage})
    for request in requests:
        request._manifest_decisions = found[request.pk]


def _request_decisions(request: GenerationRequest) -> list[dict[str, Any]]:
    """The request's own policy decisions (the usage check's), read once per attempt and kept on the
    instance: they are fixed before the worker starts, and every image's manifest cites them."""
    cached = getattr(request, "_manifest_decisions", None)
    if cached is None:
        cached = [{"rule_id": d.rule_id, "outcome": d.outcome, "stage": d.stage} for d in request.decisions.order_by("pk")]
        request._manifest_decisions = cached
    return list(cached)


def stamp_output(request: GenerationRequest, output: GeneratedOutput, mark_id: int | None = None) -> GeneratedOutput:
    """Watermark, write XMP, sign the C2PA manifest and verify the result (worker side). ``mark_id``
    is a fresh watermark id (``new_mark_ids``), drawn here when not given.

    Raises provenance.SigningUnavailable (try later) or SignerConfigurationError (operator must
    fix): never returns an unsigned image."""
    from stackgan_django import provenance

    decisions = _request_decisions(request) + [
                {"rule_id": d.rule_id, "outcome": d.outcome.value, "stage": "output"} for d in output.verdict.decisions]
    output.mark_id = mark_id if mark_id is not None else new_mark_id()
    # One pass from pixels to a checked file (the image is encoded once, never decoded again); the
    # check after signing is STACKGAN["VERIFY_AFTER_SIGNING"]'s (see provenance.stamp_image).
    stamped = provenance.stamp_image(output.image, mark_id=output.mark_id, model_version=request.model_version,
                                     request=request, decisions=decisions)
    output.signed = stamped.signed
    output.provenance = stamped.report.to_dict()
    return output


def _delete_files(storage: Any, names: list[str]) -> None:
    for name in names:
        try:
            if storage.exists(name):
                storage.delete(name)
        except Exception:  # the check command finds anything left; the failure being handled matters more
            logger.exception("could not remove %s after a failed attempt", name)


def _store_overwriting(storage: Any, name: str, data: bytes, written: list[str]) -> str:
    """Save ``data`` under exactly ``name``, replacing a file an earlier attempt left there (a
    storage never renames then). Every name that may hold bytes is added to ``written`` first, so a
    partial file from a write that fails part-way is removed too."""
    from django.core.files.base import ContentFile

    written.append(name)
    if storage.exists(name):
        storage.delete(name)
    stored = storage.save(name, ContentFile(data))
    if stored != name:
        written.append(stored)
        raise OSError(f"the storage saved {name!r} as {stored!r}; another writer holds the name")
    return stored


def finish_request(request_id: int, outputs: list[GeneratedOutput], compute_seconds: float,
                   attempt: int | None = None) -> list[Asset]:
    """RUNNING -> DONE, storing each image the output policy lets through as an asset pending
    review. An index that already has an asset is skipped, so a re-run never duplicates. With
    ``attempt``, only that attempt may finish (a worker whose lease lapsed and was taken over
    stores nothing). When anything fails, the files this call wrote are removed: no signed image
    is ever left without its asset row."""
    storage = asset_storage()
    written: list[str] = []
    committed = False
    try:
        with transaction.atomic():
            request = _locked_running(request_id, attempt)
            existing = set(request.assets.values_list("index", flat=True))
            created: list[Asset] = []
            verdicts: list[tuple[Verdict, Asset | None]] = []
            for output in outputs:
                if output.index in existing:
                    continue
                if output.verdict.denied:
                    verdicts.append((output.verdict, None))
                    continue
                if output.signed is None:
                    raise WorkflowError("an image must be signed before it is stored; no asset is kept unsigned")
                data = output.signed
                asset = Asset(request=request, index=output.index, seed=output.seed, width=output.image.width,
                              height=output.image.height, sha256=hashlib.sha256(data).hexdigest(),
                              flagged=request.flagged or output.verdict.needs_review, mark_id=output.mark_id,
                              provenance=output.provenance or {},
                              provenance_state=(output.provenance or {}).get("state", ""))
                asset.file.name = _store_overwriting(storage, asset_file_name(request, output.index), data, written)
                created.append(asset)
                verdicts.append((output.verdict, asset))
            # The request's assets in one INSERT, then every image's decisions in one more (the
            # assets' ids come back from the first; on PostgreSQL and SQLite >= 3.35 alike).
            Asset.objects.bulk_create(created)
            PolicyDecision.objects.bulk_create([row for verdict, asset in verdicts for row in decision_rows(
                verdict, request=request if asset is None else None, asset=asset)])
            request.state = State.DONE
            request.finished_at = timezone.now()
            request.compute_seconds = compute_seconds
            request.error = ""
            request.lease_expires_at = None
            request.save(update_fields=["state", "finished_at", "compute_seconds", "error", "lease_expires_at"])
            record_event("request.done", request, "worker", assets=[a.pk for a in created],
                         refused=[o.index for o in outputs if o.verdict.denied], compute_seconds=round(compute_seconds, 3))
        committed = True
        return created
    finally:
        if not committed:
            _delete_files(storage, written)


def remove_unowned_files(request_id: int) -> list[str]:
    """Delete the files under a request's asset names that no asset row owns (left by a worker
    killed between writing and committing). Only for requests no worker is writing."""
    request = GenerationRequest.objects.filter(pk=request_id).first()
    if request is None or request.state == State.RUNNING:
        return []
    storage = asset_storage()
    owned = set(request.assets.values_list("index", flat=True))
    names = [asset_file_name(request, index) for index in range(request.num_images) if index not in owned]
    removed = []
    for name in names:
        try:
            if storage.exists(name):
                storage.delete(name)
                removed.append(name)
        except Exception:
            logger.exception("could not remove the unowned file %s", name)
    if removed:
        logger.info("request %s: removed %d file(s) no asset owns: %s", request_id, len(removed), removed)
    return removed


def fail_request(request_id: int, error: str, attempt: int | None = None, detail: str = "") -> GenerationRequest:
    """RUNNING -> QUEUED again while attempts remain (with a delay), else FAILED with the reason.
    With ``attempt``, a request another worker took over is left alone (TransitionError). ``error``
    is shown to the editor; ``detail`` (the exception, for staff) goes to the audit event only."""
    with transaction.atomic():
        request = _locked_running(request_id, attempt)
        retry = request.attempts < app_settings.MAX_ATTEMPTS
        request.state = State.QUEUED if retry else State.FAILED
        request.error = error[:2000]
        request.queued_at = timezone.now() if retry else request.queued_at
        request.finished_at = None if retry else timezone.now()
        request.lease_expires_at = None
        request.sent_at = None
        request.save(update_fields=["state", "error", "queued_at", "finished_at", "lease_expires_at", "sent_at"])
        record_event("request.retrying" if retry else "request.failed", request, "worker",
                     attempt=request.attempts, error=error[:500], **({"detail": detail[:2000]} if detail else {}))
        if retry:
            transaction.on_commit(lambda: delivery.enqueue(request.pk, countdown=5 * request.attempts))
        else:
            transaction.on_commit(lambda: remove_unowned_files(request.pk))
        return request


def defer_request(request_id: int, reason: str, countdown: float = 60, attempt: int | None = None) -> GenerationRequest:
    """RUNNING -> QUEUED without using up an attempt: signing is pending (a timestamp authority is
    unreachable), the request will run again, and nothing is stored unsigned meanwhile."""
    with transaction.atomic():
        request = _locked_running(request_id, attempt)
        request.state = State.QUEUED
        request.attempts = max(0, request.attempts - 1)
        # The reason names the timestamp authority's address and the library's words: staff read it in
        # the audit event; the editor is told what happens next.
        request.error = "signing pending: the timestamp service could not be reached; the request will run again"
        request.queued_at = timezone.now()
        request.lease_expires_at = None
        request.sent_at = None
        request.save(update_fields=["state", "attempts", "error", "queued_at", "lease_expires_at", "sent_at"])
        record_event("request.signing_pending", request, "worker", reason=reason[:500])
        transaction.on_commit(lambda: delivery.enqueue(request.pk, countdown=countdown))
        return request


def retry_request(request_id: int, user: Any = None) -> GenerationRequest:
    """FAILED -> QUEUED, by a person, with a fresh set of attempts.

    A retry is a new generation, so it passes what a new submission passes, as they stand now:
    the usage policy in force and the requester's quota (under the quota lock), and it generates
    with the model version active now. A request of a model that was withdrawn is re-targeted to
    the active one (the caption, not the model, is what the editor asked for); with no active
    model, or a caption the policy now refuses, the retry is refused and the request stays FAILED."""
    from stackgan_django.services.submission import (
        QUOTA_WINDOW,
        active_model_version,
        add_quota_decisions,
        asked_for_since,
        judge_caption,
        lock_quota,
    )

    model_version = active_model_version()  # NoActiveModel: nothing can be generated now
    # The caption (which never changes) is judged before any lock, as a submission's is.
    found = GenerationRequest.objects.filter(pk=request_id).values("caption", "purpose", "num_images").first()
    if found is None:
        raise UnknownRequest(f"There is no generation request with id {request_id!r}.")
    verdict, usage = judge_caption(found["caption"], found["purpose"], found["num_images"])
    with transaction.atomic():
        request = _locked(request_id)
        if request.state != State.FAILED:
            raise TransitionError(f"Only failed requests can be retried; this one is {request.get_state_display()}.")
        requester = request.requested_by
        lock_quota(requester)
        # This request's own images are in the quota's totals already when it was made or queued in
        # its window (the totals count it so).
        counted = request.num_images if GenerationRequest.objects.filter(
            asked_for_since(timezone.now() - QUOTA_WINDOW), pk=request.pk).exists() else 0
        add_quota_decisions(verdict, usage, request.num_images, requester, already_counted=counted)
        if verdict.denied:
            # Said to whoever retries, an editor too: the reasons as a requester may read them.
            reasons = " ".join(requester_message(d.message, d.evidence) for d in verdict.decisions
                               if d.outcome.value == "deny")
            raise TransitionError(f"Request {request.pk} cannot be retried: the usage policy now refuses it. {reasons}")
        previous_model = request.model_version
        request.state = State.QUEUED
        request.attempts = 0
        request.queued_at = timezone.now()
        request.finished_at = None
        request.sent_at = None
        request.model_version = model_version
        request.policy_version = verdict.policy_version
        request.flagged = request.flagged or verdict.needs_review
        request.save(update_fields=["state", "attempts", "queued_at", "finished_at", "sent_at", "model_version",
                                    "policy_version", "flagged"])
        store_decisions(verdict, request=request)
        record_event("request.retried", request, user, model_version=model_version.name,
                     previous_model_version=previous_model.name if previous_model else None,
                     policy_version=verdict.policy_version, rules=[d.rule_id for d in verdict.decisions])
        transaction.on_commit(lambda: delivery.enqueue(request.pk))
        return request


def recover_lapsed_leases(now: datetime | None = None, actor: str = "maintenance") -> tuple[list[int], list[int]]:
    """RUNNING requests whose worker died (lease lapsed) go back to QUEUED and are sent again, or,
    with their attempts used up, to FAILED with a reason the editor sees. Returns (requeued, failed)."""
    now = now or timezone.now()
    candidates = list(GenerationRequest.objects.filter(state=State.RUNNING).filter(_lapsed_filter(now))
                      .values_list("pk", flat=True))
    requeued, failed = [], []
    for pk in candidates:
        with transaction.atomic():
            request = _locked(pk)
            if request.state != State.RUNNING or not lease_lapsed(request, now):
                continue  # renewed or finished since the query
            if request.attempts >= app_settings.MAX_ATTEMPTS:
                _give_up(request, now, actor, WORKER_DIED_REASON.format(attempts=request.attempts))
                failed.append(pk)
                continue
            request.state = State.QUEUED
            request.queued_at = now
            request.lease_expires_at = None
            request.sent_at = None
            request.error = "the worker stopped while generating; queued again"
            request.save(update_fields=["state", "queued_at", "lease_expires_at", "sent_at", "error"])
            record_event("request.requeued", request, actor, previous_state=State.RUNNING.value, attempt=request.attempts,
                         previous_worker=request.worker, reason="lease lapsed")
            transaction.on_commit(lambda pk=pk: delivery.enqueue(pk))
            requeued.append(pk)
    if requeued or failed:
        logger.warning("lapsed leases: requeued %s, failed %s", requeued, failed)
    return requeued, failed


def run_maintenance(now: datetime | None = None) -> dict[str, list[int]]:
    """The periodic work Celery beat schedules (every few seconds): recover requests whose worker
    died, then send the outbox (requests the broker never took or lost)."""
    requeued, failed = recover_lapsed_leases(now)
    sent = delivery.send_pending_requests(now)
    _anchor_audit_chain(now)
    return {"requeued": requeued, "failed": failed, "sent": sent}


def _anchor_audit_chain(now: datetime | None) -> None:
    """The audit chain's head to the anchor file, when configured; best effort: a full disk must not
    stop the recovery of requests (a missing anchor only narrows what truncation can be seen)."""
    from stackgan_django.audit import anchor_head

    if not app_settings.AUDIT_ANCHOR_FILE:
        return
    try:
        anchor_head(app_settings.AUDIT_ANCHOR_FILE, app_settings.AUDIT_ANCHOR_SECONDS, now)
    except (OSError, DatabaseError) as exc:
        logger.error("could not anchor the audit chain in %s: %s", app_settings.AUDIT_ANCHOR_FILE, exc)


def sweep_stale_requests(now: datetime | None = None) -> list[int]:
    """The operator's sweep (the ``sweep_requests`` command): the maintenance work once, returning
    the ids sent to the workers again."""
    summary = run_maintenance(now)
    return sorted(set(summary["requeued"]) | set(summary["sent"]))


# -- the pipeline ----------------------------------------------------------------------------------

# One index per model version per process: it is a few megabytes and costs a second to read.
_near_copy_indexes: dict[tuple[int, str], Any] = {}


class NearCopyIndexChanged(ExplainedFailure, RuntimeError):
    """The checkpoint folder's near_copies.json is not the one the model version was registered with."""


def near_copy_index(model_version: ModelVersion) -> Any:
    """The training-image index shipped beside the checkpoint (None if it had none when the model
    version was registered). A damaged index raises policies.NearCopyIndexError and one replaced,
    added or deleted since registration NearCopyIndexChanged; both fail the request: an image is
    never let through unchecked, or checked against an index nobody vetted."""
    key = (model_version.pk, model_version.checkpoint_sha256, model_version.near_copy_index_sha256)
    if key not in _near_copy_indexes:
        _near_copy_indexes.clear()
        _near_copy_indexes[key] = _registered_near_copy_index(model_version)
    return _near_copy_indexes[key]


def _registered_near_copy_index(model_version: ModelVersion) -> Any:
    from policies.near_copy import INDEX_FILE

    path = Path(model_version.checkpoint_path) / INDEX_FILE
    try:
        data = path.read_bytes() if path.is_file() else None
    except OSError as exc:
        raise NearCopyIndexError(f"{path} cannot be read: {exc}") from exc
    found = hashlib.sha256(data).hexdigest() if data is not None else ""
    if found != model_version.near_copy_index_sha256:
        logger.error("model version %s: %s is %s, registered as %s", model_version.name, path, found or "missing",
                     model_version.near_copy_index_sha256 or "absent")
        raise NearCopyIndexChanged(
            f"The near-copy index of model version {model_version.name!r} was replaced, added or removed after the "
            "model was registered, so the check against its training images cannot be trusted; nothing is "
            "released. An administrator must restore the registered files or register them as a new model version.")
    return NearCopyIndex.loads(data, str(path)) if data is not None else None


def _show_progress(request_ids: int | list[int], stage: str) -> None:
    """The stage the editors' pages show (one UPDATE for a whole batch); best effort, since a lost
    progress line must never fail a request (its state changes are what count)."""
    from stackgan_django.services.progress import record_progress

    try:
        record_progress(request_ids, stage)
    except Exception:
        logger.warning("request(s) %s: could not record progress %r", request_ids, stage, exc_info=True)


def request_seeds(request: GenerationRequest) -> list[int]:
    return [(request.seed + i) % app_settings.MAX_SEED for i in range(request.num_images)]


def check_outputs(request: GenerationRequest, rendered: list[Any]) -> list[GeneratedOutput]:
    """The output policy (with the site's own checks) on each rendered image of a request."""
    return check_batch([(request, rendered)])[0]


def check_batch(jobs: list[tuple[GenerationRequest, list[Any]]]) -> list[list[GeneratedOutput]]:
    """``check_outputs`` for every request of a batch (same model version) in one call of the
    output policy over all their images (``OutputPolicy.check_images``: one vectorised near-copy
    search); each image's verdict is the one it gets checked alone."""
    if not jobs:
        return []
    output_policy = current_policies().output.with_checks(app_settings.OUTPUT_CHECKS)
    near_copies = near_copy_index(jobs[0][0].model_version)
    verdicts = iter(output_policy.check_images([item.image for _, rendered in jobs for item in rendered], near_copies))
    return [[GeneratedOutput(index, item.seed, item.image, next(verdicts)) for index, item in enumerate(rendered)]
            for _, rendered in jobs]


def render_and_check(request: GenerationRequest) -> tuple[list[GeneratedOutput], float]:
    """Generate one request's images and run the output policy on each; returns them with the
    generator's compute seconds. Nothing is written but the progress stage the editor sees."""
    from stackgan_django.generation import backend_for

    backend = backend_for(request.model_version)
    started = time.perf_counter()
    rendered = backend.generate(request.caption, request_seeds(request))
    compute_seconds = time.perf_counter() - started
    _show_progress(request.pk, "checking")
    return check_outputs(request, rendered), compute_seconds


_thread_pools: dict[str, Any] = {}


def governance_threads() -> Any:
    """A context in which numpy's BLAS uses one thread: the governance's matrix products (the
    near-copy search's) are small, and with two BLAS threads each waits at a barrier for the other
    whenever another process or the generator's idle OpenMP threads hold a core. Measured on the
    shared 2-core machine (load 6.7, same process, alternating): the batch search 13.0 ms an image
    with two BLAS threads, 6.5 ms with one. The limit is lifted when the context ends (the
    generator's own threads are torch's, not numpy's)."""
    from threadpoolctl import ThreadpoolController

    controller = _thread_pools.get(os.getpid())
    if controller is None:  # per process: a worker child makes its own after the fork
        _thread_pools.clear()
        controller = _thread_pools[os.getpid()] = ThreadpoolController()
    return controller.limit(limits=1, user_api="blas")


@dataclass
class _BatchItem:
    """One request of a batch on its way through the pipeline: what was rendered and checked for
    it, or the exception that stopped it (which fails this request alone)."""

    request: GenerationRequest
    outputs: list[GeneratedOutput] | None = None
    compute_seconds: float = 0.0
    error: BaseException | None = None


def _render_batch(items: list[_BatchItem]) -> None:
    """Draw every request of the batch in one forward pass (through the backend, so the optimised
    generator batches too) and split the pass's compute time by images. When the shared pass
    fails, each request is drawn alone, so one request that breaks the generator fails alone."""
    from celery.exceptions import SoftTimeLimitExceeded

    from stackgan_django.generation import backend_for, generate_batch

    backend = backend_for(items[0].request.model_version)
    if len(items) > 1:
        jobs = [(item.request.caption, request_seeds(item.request)) for item in items]
        try:
            started = time.perf_counter()
            rendered = generate_batch(backend, jobs)
            seconds = time.perf_counter() - started
            total = sum(item.request.num_images for item in items)
            for item, images in zip(items, rendered, strict=True):
                item.outputs = images
                # Each request is charged its share of the pass (the pilot report's cost per image).
                item.compute_seconds = seconds * item.request.num_images / total
            return
        except SoftTimeLimitExceeded:
            raise
        except Exception:
            logger.exception("the shared forward pass of requests %s failed; drawing each alone",
                             [item.request.pk for item in items])
    for item in items:
        try:
            started = time.perf_counter()
            item.outputs = backend.generate(item.request.caption, request_seeds(item.request))
            item.compute_seconds = time.perf_counter() - started
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            item.error = exc


def _outcome_of_failure(request: GenerationRequest, attempt: int, exc: BaseException) -> str:
    """Record why one request's attempt stopped; the row ends retryable exactly as for a request
    processed alone (taken over: nothing; signing pending: deferred; anything else: retry or fail)."""
    from celery.exceptions import SoftTimeLimitExceeded

    from stackgan_django.provenance import SigningUnavailable

    if isinstance(exc, (LeaseLost, TransitionError)):
        logger.warning("request %s attempt %s stores nothing: %s", request.pk, attempt, exc)
        return "taken over"
    if isinstance(exc, SigningUnavailable):
        logger.warning("request %s: signing pending (%s); it will run again", request.pk, exc)
        return _record_failure(lambda: defer_request(request.pk, str(exc), attempt=attempt), request.pk,
                               "signing pending")
    if isinstance(exc, SoftTimeLimitExceeded):
        logger.error("request %s failed", request.pk, exc_info=exc)
        reason, detail = "Generation took longer than the worker's time limit and was stopped.", ""
    else:
        reason, detail = reason_for_editors(exc)
        logger.error("request %s failed: %s", request.pk, reason, exc_info=exc)
    return _record_failure(lambda: fail_request(request.pk, reason, attempt=attempt, detail=detail), request.pk,
                           "failed")


def reason_for_editors(exc: BaseException) -> tuple[str, str]:
    """What the editor is told about a failed attempt, and the internal detail kept for staff.

    The request's error is shown to its editor (admin pages, API, webhooks), so it carries only what
    is written for them: an ExplainedFailure's message, the operating system's wording of a file
    error (never the path), or a reference that the worker's log and the request's audit event
    ("detail") hold the exception under. Exception text can hold server paths, hostnames, SQL and
    library internals."""
    if isinstance(exc, ExplainedFailure):
        return str(exc), ""
    detail = f"{type(exc).__name__}: {exc}"[:2000]
    reference = secrets.token_hex(4)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        summary = "The worker ran out of memory while generating."
    elif isinstance(exc, OSError) and exc.errno:
        summary = f"The worker could not read or write a file ({os.strerror(exc.errno)})."
    else:
        summary = "An internal error stopped the worker."
    return (f"{summary} Reference {reference}: an administrator finds the details under it in the worker's log "
            "and the request's audit trail.", f"[{reference}] {detail}")


def _check_items(items: list[_BatchItem]) -> None:
    """The output policy over every image of the batch at once; if that fails, each request is
    checked alone, so a failure belongs to the request whose images caused it."""
    from celery.exceptions import SoftTimeLimitExceeded

    ready = [item for item in items if item.error is None]
    try:
        for item, outputs in zip(ready, check_batch([(item.request, item.outputs or []) for item in ready]), strict=True):
            item.outputs = outputs
        return
    except SoftTimeLimitExceeded:
        raise
    except Exception:
        logger.exception("the output policy over the batch %s failed; checking each request alone",
                         [item.request.pk for item in ready])
    for item in ready:
        try:
            item.outputs = check_outputs(item.request, item.outputs or [])
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            item.error = exc


def _passing(items: list[_BatchItem]) -> list[tuple[_BatchItem, GeneratedOutput]]:
    """Every image the output policy let through, of the requests still going, in order."""
    return [(item, output) for item in items if item.error is None
            for output in item.outputs or [] if not output.verdict.denied]


def _prepare_stamping(items: list[_BatchItem]) -> None:
    """Fresh watermark ids for every image of the batch that passed the output policy, in one query,
    and the request decisions every manifest cites, in one more (rather than both per request)."""
    passing = _passing(items)
    with_fresh_connection(lambda: _read_request_decisions([item.request for item in items if item.error is None]),
                          "reading decisions")
    mark_ids = with_fresh_connection(lambda: new_mark_ids(len(passing)), "drawing watermark ids")
    for (_, output), mark_id in zip(passing, mark_ids, strict=True):
        output.mark_id = mark_id


def _stamp_in_threads(items: list[_BatchItem], threads: int) -> None:
    """Stamp every passing image of the batch in ``threads`` threads (GOVERNANCE_THREADS): deflate,
    the thumbnail, numpy and hashing release the GIL, and the generator leaves the cores idle
    meanwhile. No database work happens here (ids and decisions are read before); a request whose
    image fails to stamp gets that error, as if it had been stamped in turn."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = _passing(items)
    if threads <= 1 or len(jobs) < 2:
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stamp") as pool:
        futures = [(item, pool.submit(stamp_output, item.request, output, output.mark_id)) for item, output in jobs]
        for item, future in futures:
            try:
                future.result()
            except Exception as exc:
                if item.error is None:
                    item.error = exc


def _stamp_and_finish(item: _BatchItem, lease: LeaseKeeper) -> None:
    """Sign and store one request's images and finish it, in its own transaction: a failure here
    stops this request only. Images already stamped (``_stamp_in_threads``) are not stamped again;
    a watermark id not drawn for the batch is drawn here."""
    request = item.request
    passing = [output for output in item.outputs or [] if not output.verdict.denied]
    missing = [output for output in passing if output.mark_id is None]
    if missing:
        mark_ids = with_fresh_connection(lambda: new_mark_ids(len(missing)), "drawing watermark ids")
        for output, mark_id in zip(missing, mark_ids, strict=True):
            output.mark_id = mark_id
    for output in passing:
        if output.signed is None:
            with_fresh_connection(lambda output=output: stamp_output(request, output, output.mark_id), "stamping")
    if lease.has_lost(request.pk):
        raise LeaseLost(f"request {request.pk} was taken over while attempt {request.attempts} rendered")
    with_fresh_connection(lambda: finish_request(request.pk, item.outputs or [], item.compute_seconds,
                                                 attempt=request.attempts), "storing the images")


def process_request(request_id: int) -> str:
    """The whole worker pipeline for one request: start (with a lease), render, check, stamp,
    store, finish; and, when other requests for the same model wait, theirs with it.

    Batching (GENERATION_BATCH_SIZE): after starting this request, the worker claims other waiting
    ones (``claim_waiting_requests``), draws all of them in one forward pass, then checks, signs,
    stores and finishes each on its own, under its own lease and attempt, so one request's failure
    (a lost lease, signing pending, a storage error) stops that request alone and leaves it
    retryable exactly as when processed alone. Their own messages later find them done, or running
    under a live lease, and skip; if this worker dies, their leases lapse and the maintenance task
    queues them again.

    Returns what happened to ``request_id`` ("done", "skipped", "unknown", "taken over", "signing
    pending", "failed"). Every failure leaves the row retryable and nothing half-written; safe to
    run twice for one id. Each database step reconnects when the database restarted meanwhile; if
    it stays away, the leases lapse and the maintenance task recovers the requests.

    Overlap (OVERLAP_GOVERNANCE, on CUDA by default): while a batch is checked, signed and stored,
    the next waiting requests are claimed the same way and drawn in a thread, up to
    MAX_OVERLAPPED_BATCHES batches per task; each of them is governed exactly as above."""
    try:
        request = with_fresh_connection(lambda: start_request(request_id), "starting a request")
    except UnknownRequest as exc:
        logger.error("%s Dropping the message.", exc)
        return "unknown"
    if request is None:
        logger.info("request %s needs no work (already done, or running elsewhere under a live lease)", request_id)
        return "skipped"
    try:
        others = with_fresh_connection(lambda: claim_waiting_requests(request), "claiming waiting requests")
    except Exception:  # the claims rolled back together: this request runs alone, the others wait
        logger.exception("request %s: could not claim waiting requests; running it alone", request_id)
        others = []
    if others:
        logger.info("request %s draws %d waiting request(s) with it: %s", request_id, len(others),
                    [other.pk for other in others])
    items = [_BatchItem(request)] + [_BatchItem(other) for other in others]
    every: list[_BatchItem] = list(items)  # every request this task started, for the failure path
    outcomes: dict[int, str] = {}
    with LeaseKeeper(request.pk, request.attempts, {other.pk: other.attempts for other in others}) as lease:
        try:
            # Read the model version now: rendering then needs no database, however long it takes.
            model_version = with_fresh_connection(lambda: request.model_version, "reading the model version")
            for other in others:
                other.model_version = model_version  # the claim matched it
            _show_progress([item.request.pk for item in items], "generating")
            _render_batch(items)
            overlapping = overlap_governance(model_version)
            for rounds in range(1, MAX_OVERLAPPED_BATCHES + 1):
                upcoming: list[_BatchItem] = []
                drawing: threading.Thread | None = None
                if overlapping and rounds < MAX_OVERLAPPED_BATCHES:
                    upcoming = _claim_upcoming(request, model_version, lease)
                    every += upcoming
                    if upcoming:
                        # The next batch is drawn while this one is checked, signed and stored: on
                        # a GPU the forward pass leaves the CPU free for the governance.
                        drawing = threading.Thread(target=_render_batch, args=(upcoming,), daemon=True,
                                                   name=f"draw-after-{request.pk}-{rounds}")
                        drawing.start()
                _govern(items, lease, outcomes)
                if drawing is not None:
                    drawing.join()
                if not upcoming:
                    break
                items = upcoming
        except Exception as exc:  # a time limit or a failure before any request was finished
            for item in every:
                if item.request.pk not in outcomes:
                    outcomes[item.request.pk] = _outcome_of_failure(item.request, item.request.attempts, exc)
    return outcomes[request.pk]


# An overlapped task draws at most this many batches (its own and the next ones it claims), so one
# message does not hold a worker for ever while requests keep arriving; the rest wait for theirs.
MAX_OVERLAPPED_BATCHES = 4


def overlap_governance(model_version: ModelVersion) -> bool:
    """Whether this worker draws the next batch while governing the last (STACKGAN
    ["OVERLAP_GOVERNANCE"]: None = when the generator runs on CUDA, where the forward pass leaves
    the CPU idle; on a CPU the two would share the same cores)."""
    setting = app_settings.OVERLAP_GOVERNANCE
    if setting is not None:
        return bool(setting)
    if app_settings.GENERATION_BATCH_SIZE <= 1:
        return False
    from stackgan_django.generation import backend_for

    device = getattr(getattr(backend_for(model_version), "pipeline", None), "device", None)
    return getattr(device, "type", None) == "cuda"


def _claim_upcoming(first: GenerationRequest, model_version: ModelVersion, lease: LeaseKeeper) -> list[_BatchItem]:
    """The next batch of an overlapped task: waiting requests claimed as ``claim_waiting_requests``
    claims them, held under this task's lease keeper. A failure to claim just ends the overlap."""
    try:
        claimed = with_fresh_connection(lambda: _claim(model_version.pk, app_settings.GENERATION_BATCH_SIZE, first.pk),
                                        "claiming the next batch")
    except Exception:
        logger.exception("request %s: could not claim the next batch; the waiting requests keep their messages", first.pk)
        return []
    for other in claimed:
        other.model_version = model_version
        lease.hold(other.pk, other.attempts)
    if claimed:
        logger.info("request %s draws the next batch while governing this one: %s", first.pk, [r.pk for r in claimed])
        _show_progress([other.pk for other in claimed], "generating")
    return [_BatchItem(other) for other in claimed]


def _govern(items: list[_BatchItem], lease: LeaseKeeper, outcomes: dict[int, str]) -> None:
    """Check, sign, store and finish every request of a drawn batch, each on its own: one request's
    failure stops that request alone (its outcome recorded in ``outcomes``)."""
    from celery.exceptions import SoftTimeLimitExceeded

    ids = [item.request.pk for item in items]
    with governance_threads():
        _show_progress(ids, "checking")
        _check_items(items)
        _show_progress(ids, "signing")
        _prepare_stamping(items)
        _stamp_in_threads(items, app_settings.GOVERNANCE_THREADS)
        for item in items:
            try:
                if item.error is not None:
                    raise item.error
                _stamp_and_finish(item, lease)
                outcomes[item.request.pk] = "done"
            except SoftTimeLimitExceeded:
                raise
            except Exception as exc:  # this request alone; the others of the batch go on
                outcomes[item.request.pk] = _outcome_of_failure(item.request, item.request.attempts, exc)
            finally:
                lease.release(item.request.pk)


def _record_failure(action: Callable[[], Any], request_id: int, outcome: str) -> str:
    """Record a failed or deferred attempt on a fresh connection if the old one is gone."""
    try:
        with_fresh_connection(action, "recording a failed attempt")
    except (LeaseLost, TransitionError) as exc:
        logger.warning("request %s: %s", request_id, exc)
        return "taken over"
    except CONNECTION_ERRORS:
        logger.exception("request %s: the database stayed away, so the failure is not recorded; the lease lapses and "
                         "the maintenance task queues it again", request_id)
    return outcome
