"""The worker's side of a request: take it (QUEUED -> RUNNING), render, run the output policy,
stamp and store each image, and finish, fail, defer or retry it. ``process_request`` is the whole
pipeline as a plain function: the Celery task, the benchmarks and the tests all call it."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone
from PIL import Image

from policies import NearCopyIndex, Verdict
from stackgan_django.audit import record_event
from stackgan_django.conf import app_settings
from stackgan_django.governance import current_policies
from stackgan_django.models import Asset, GenerationRequest, ModelVersion
from stackgan_django.services import delivery
from stackgan_django.services.decisions import store_decisions
from stackgan_django.services.errors import TransitionError, WorkflowError

logger = logging.getLogger(__name__)
State = GenerationRequest.State


class UnknownRequest(WorkflowError):
    pass


def _locked(request_id: int) -> GenerationRequest:
    request = GenerationRequest.objects.select_for_update().filter(pk=request_id).first()
    if request is None:
        raise UnknownRequest(f"There is no generation request with id {request_id!r}.")
    return request


def _is_stale(request: GenerationRequest, now=None) -> bool:
    now = now or timezone.now()
    since = request.started_at if request.state == State.RUNNING else request.queued_at
    return since is None or now - since > timedelta(seconds=app_settings.REQUEST_DEADLINE_SECONDS)


def start_request(request_id: int) -> GenerationRequest | None:
    """QUEUED -> RUNNING. Returns None when there is nothing to do (done, denied, failed, or
    running elsewhere and not yet past its deadline), so a duplicate message is harmless."""
    with transaction.atomic():
        request = _locked(request_id)
        if request.state == State.RUNNING and not _is_stale(request):
            return None
        if request.state not in (State.QUEUED, State.RUNNING):
            return None
        request.state = State.RUNNING
        request.started_at = timezone.now()
        request.attempts += 1
        request.save(update_fields=["state", "started_at", "attempts"])
        record_event("request.started", request, "worker", attempt=request.attempts)
        return request


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
    while True:
        candidate = secrets.randbelow(2**32 - 1) + 1
        if not Asset.objects.filter(mark_id=candidate).exists():
            return candidate


def stamp_output(request: GenerationRequest, output: GeneratedOutput) -> GeneratedOutput:
    """Watermark, write XMP, sign the C2PA manifest and verify the result (worker side).

    Raises provenance.SigningUnavailable (try later) or SignerConfigurationError (operator must
    fix): never returns an unsigned image."""
    from stackgan_django import provenance

    decisions = [{"rule_id": d.rule_id, "outcome": d.outcome, "stage": d.stage}
                 for d in request.decisions.all()] + [
                {"rule_id": d.rule_id, "outcome": d.outcome.value, "stage": "output"} for d in output.verdict.decisions]
    output.mark_id = new_mark_id()
    png = provenance.embed_mark_and_xmp(output.image, output.mark_id)
    output.signed = provenance.sign_generated(png, model_version=request.model_version, request=request,
                                              decisions=decisions, mark_id=output.mark_id)
    output.provenance = provenance.verify_bytes(output.signed).to_dict()
    return output


def finish_request(request_id: int, outputs: list[GeneratedOutput], compute_seconds: float) -> list[Asset]:
    """RUNNING -> DONE, storing each image the output policy lets through as an asset pending
    review. An index that already has an asset is skipped, so a re-run never duplicates."""
    from django.core.files.base import ContentFile

    with transaction.atomic():
        request = _locked(request_id)
        if request.state != State.RUNNING:
            raise TransitionError(f"request {request_id} is {request.state}, not running")
        existing = set(request.assets.values_list("index", flat=True))
        created = []
        for output in outputs:
            if output.index in existing:
                continue
            if output.verdict.denied:
                store_decisions(output.verdict, request=request)
                continue
            if output.signed is None:
                raise TransitionError("an image must be signed before it is stored; no asset is kept unsigned")
            data = output.signed
            asset = Asset(request=request, index=output.index, seed=output.seed, width=output.image.width,
                          height=output.image.height, sha256=hashlib.sha256(data).hexdigest(),
                          flagged=request.flagged or output.verdict.needs_review, mark_id=output.mark_id,
                          provenance=output.provenance or {},
                          provenance_state=(output.provenance or {}).get("state", ""))
            name = f"{app_settings.STORAGE_PREFIX}/{request.public_id}/{output.index}.png"
            asset.file.save(name, ContentFile(data), save=False)
            asset.save()
            store_decisions(output.verdict, asset=asset)
            created.append(asset)
        request.state = State.DONE
        request.finished_at = timezone.now()
        request.compute_seconds = compute_seconds
        request.error = ""
        request.save(update_fields=["state", "finished_at", "compute_seconds", "error"])
        record_event("request.done", request, "worker", assets=[a.pk for a in created],
                     refused=[o.index for o in outputs if o.verdict.denied], compute_seconds=round(compute_seconds, 3))
        return created


def fail_request(request_id: int, error: str) -> GenerationRequest:
    """RUNNING -> QUEUED again while attempts remain (with a delay), else FAILED."""
    with transaction.atomic():
        request = _locked(request_id)
        if request.state != State.RUNNING:
            raise TransitionError(f"request {request_id} is {request.state}, not running")
        retry = request.attempts < app_settings.MAX_ATTEMPTS
        request.state = State.QUEUED if retry else State.FAILED
        request.error = error[:2000]
        request.queued_at = timezone.now() if retry else request.queued_at
        request.finished_at = None if retry else timezone.now()
        request.save(update_fields=["state", "error", "queued_at", "finished_at"])
        record_event("request.retrying" if retry else "request.failed", request, "worker",
                     attempt=request.attempts, error=error[:500])
        if retry:
            transaction.on_commit(lambda: delivery.enqueue(request.pk, countdown=5 * request.attempts))
        return request


def defer_request(request_id: int, reason: str, countdown: float = 60) -> GenerationRequest:
    """RUNNING -> QUEUED without using up an attempt: signing is pending (a timestamp authority is
    unreachable), the request will run again, and nothing is stored unsigned meanwhile."""
    with transaction.atomic():
        request = _locked(request_id)
        if request.state != State.RUNNING:
            raise TransitionError(f"request {request_id} is {request.state}, not running")
        request.state = State.QUEUED
        request.attempts = max(0, request.attempts - 1)
        request.error = f"signing pending: {reason}"[:2000]
        request.queued_at = timezone.now()
        request.save(update_fields=["state", "attempts", "error", "queued_at"])
        record_event("request.signing_pending", request, "worker", reason=reason[:500])
        transaction.on_commit(lambda: delivery.enqueue(request.pk, countdown=countdown))
        return request


def retry_request(request_id: int, user: Any = None) -> GenerationRequest:
    """FAILED -> QUEUED, by a person, with a fresh set of attempts."""
    with transaction.atomic():
        request = _locked(request_id)
        if request.state != State.FAILED:
            raise TransitionError(f"Only failed requests can be retried; this one is {request.get_state_display()}.")
        request.state = State.QUEUED
        request.attempts = 0
        request.queued_at = timezone.now()
        request.finished_at = None
        request.save(update_fields=["state", "attempts", "queued_at", "finished_at"])
        record_event("request.retried", request, user)
        transaction.on_commit(lambda: delivery.enqueue(request.pk))
        return request


def sweep_stale_requests(now=None) -> list[int]:
    """Re-enqueue requests stuck in QUEUED or RUNNING past their deadline (lost messages, dead workers)."""
    now = now or timezone.now()
    deadline = now - timedelta(seconds=app_settings.REQUEST_DEADLINE_SECONDS)
    candidates = GenerationRequest.objects.filter(state__in=[State.QUEUED, State.RUNNING]).filter(
        queued_at__lt=deadline).values_list("pk", flat=True)
    swept = []
    for pk in candidates:
        with transaction.atomic():
            request = _locked(pk)
            if request.state not in (State.QUEUED, State.RUNNING) or not _is_stale(request, now):
                continue
            if request.attempts >= app_settings.MAX_ATTEMPTS:
                request.state = State.FAILED
                request.error = request.error or "gave up: no worker finished it before the deadline"
                request.finished_at = now
                request.save(update_fields=["state", "error", "finished_at"])
                record_event("request.failed", request, "sweeper", reason="deadline passed, attempts used up")
                continue
            previous = request.state
            request.state = State.QUEUED
            request.queued_at = now
            request.save(update_fields=["state", "queued_at"])
            record_event("request.requeued", request, "sweeper", previous_state=previous)
            transaction.on_commit(lambda pk=pk: delivery.enqueue(pk))
            swept.append(pk)
    return swept


# -- the pipeline ----------------------------------------------------------------------------------

def near_copy_index(model_version: ModelVersion) -> NearCopyIndex | None:
    """The training-image index shipped beside the checkpoint, if it has one."""
    path = Path(model_version.checkpoint_path) / "near_copies.json"
    if not path.is_file():
        return None
    return NearCopyIndex.from_json(json.loads(path.read_text()))


def render_and_check(request: GenerationRequest) -> tuple[list[GeneratedOutput], float]:
    """Generate the request's images and run the output policy on each; returns them with the
    generator's compute seconds. Nothing is written."""
    from stackgan_django.generation import backend_for

    backend = backend_for(request.model_version)
    seeds = [(request.seed + i) % app_settings.MAX_SEED for i in range(request.num_images)]
    started = time.perf_counter()
    rendered = backend.generate(request.caption, seeds)
    compute_seconds = time.perf_counter() - started
    policies = current_policies()
    near_copies = near_copy_index(request.model_version)
    outputs = [GeneratedOutput(index, item.seed, item.image, policies.output.check_image(item.image, near_copies))
               for index, item in enumerate(rendered)]
    return outputs, compute_seconds


def process_request(request_id: int) -> str:
    """The whole worker pipeline for one request: start, render, check, stamp, store, finish.

    Returns what happened ("done", "skipped", "unknown", "signing pending", "failed"). Every
    failure leaves the row retryable and nothing half-written; safe to run twice for one id."""
    from stackgan_django.provenance import SigningUnavailable

    try:
        request = start_request(request_id)
    except UnknownRequest as exc:
        logger.error("%s Dropping the message.", exc)
        return "unknown"
    if request is None:
        logger.info("request %s needs no work (already done or running elsewhere)", request_id)
        return "skipped"
    try:
        outputs, compute_seconds = render_and_check(request)
        for output in outputs:
            if not output.verdict.denied:
                stamp_output(request, output)
        finish_request(request.pk, outputs, compute_seconds)
        return "done"
    except SigningUnavailable as exc:
        logger.warning("request %s: signing pending (%s); it will run again", request_id, exc)
        defer_request(request.pk, str(exc))
        return "signing pending"
    except Exception as exc:  # every failure leaves the row retryable, never half-written
        logger.exception("request %s failed", request_id)
        fail_request(request.pk, f"{type(exc).__name__}: {exc}")
        return "failed"
