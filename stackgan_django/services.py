"""The workflow. Every state change of a request, asset or model version happens here: the
transition is validated, saved, and written to the audit log in one transaction. Admin, API,
tasks and commands call these functions; none of them changes state on its own."""

from __future__ import annotations

import hashlib
import logging
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from PIL import Image

from policies import PolicyError, UsageContext, Verdict
from stackgan_django.audit import record_event
from stackgan_django.conf import app_settings
from stackgan_django.governance import current_policies
from stackgan_django.models import Asset, GenerationRequest, ModelVersion, PolicyDecision, Review

logger = logging.getLogger(__name__)
State = GenerationRequest.State


class WorkflowError(Exception):
    """Base of the errors a user can act on; the message says what to do."""


class InvalidSubmission(WorkflowError):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class NoActiveModel(WorkflowError):
    pass


class UnknownRequest(WorkflowError):
    pass


class TransitionError(WorkflowError):
    pass


# -- submission ------------------------------------------------------------------------------------

def clean_caption(caption: Any) -> str:
    """Whitespace tidied (non-breaking spaces from Word included); the policy judges the content."""
    if not isinstance(caption, str):
        raise InvalidSubmission({"caption": "must be text"})
    caption = unicodedata.normalize("NFC", caption)
    return " ".join(caption.replace("\u00a0", " ").split())


def validate_submission(caption: Any, num_images: Any, seed: Any) -> tuple[str, int, int | None]:
    errors: dict[str, str] = {}
    cleaned = ""
    try:
        cleaned = clean_caption(caption)
        if not cleaned:
            errors["caption"] = "Type a caption describing the image you want."
        elif len(cleaned) > app_settings.MAX_CAPTION_LENGTH:
            errors["caption"] = (f"The caption is {len(cleaned)} characters; "
                                 f"the limit is {app_settings.MAX_CAPTION_LENGTH}.")
    except InvalidSubmission as exc:
        errors.update(exc.errors)
    maximum = app_settings.MAX_IMAGES_PER_REQUEST
    if isinstance(num_images, bool) or not isinstance(num_images, int) or not 1 <= num_images <= maximum:
        errors["num_images"] = f"Ask for between 1 and {maximum} images."
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= app_settings.MAX_SEED):
        errors["seed"] = f"The seed must be a whole number from 0 to {app_settings.MAX_SEED}, or left empty."
    if errors:
        raise InvalidSubmission(errors)
    return cleaned, num_images, seed


def active_model_version() -> ModelVersion:
    model_version = ModelVersion.objects.filter(is_active=True).first()
    if model_version is None:
        raise NoActiveModel("No model version is active; an administrator must register and activate one.")
    return model_version


def _images_since(**filters: Any) -> int:
    since = timezone.now() - timedelta(days=1)
    return (GenerationRequest.objects.filter(created_at__gte=since, **filters)
            .exclude(state=State.POLICY_DENIED).aggregate(total=Sum("num_images"))["total"] or 0)


def images_requested_today(user: Any) -> int:
    """Images this user asked for in the last 24 hours (refused requests do not count)."""
    if user is None or not getattr(user, "pk", None):
        return 0
    return _images_since(requested_by=user)


def group_images_today(user: Any) -> dict[str, int]:
    """Images asked for in the last 24 hours by the members of each of the user's groups."""
    if user is None or not getattr(user, "pk", None):
        return {}
    return {group.name: _images_since(requested_by__groups=group) for group in user.groups.all()}


def _store_decisions(verdict: Verdict, request: GenerationRequest | None = None, asset: Asset | None = None) -> None:
    decisions = verdict.decisions or []
    rows = [
        PolicyDecision(request=request, asset=asset, stage=verdict.stage, outcome=d.outcome.value, rule_id=d.rule_id,
                       message=d.message, evidence=d.evidence, policy_version=verdict.policy_version)
        for d in decisions
    ]
    if not rows:
        rows = [PolicyDecision(request=request, asset=asset, stage=verdict.stage, outcome="allow",
                               rule_id=f"{verdict.stage}.no_rule_fired", message="No policy rule fired.",
                               policy_version=verdict.policy_version)]
    PolicyDecision.objects.bulk_create(rows)


def check_usage(caption: str, purpose: str, num_images: int, user: Any) -> Verdict:
    """The usage verdict; a broken policy file fails closed with a denial that says so."""
    try:
        policies = current_policies()
    except PolicyError as exc:
        logger.error("usage policy unavailable, refusing: %s", exc)
        from policies import Decision, Outcome

        return Verdict("usage", "unavailable", [Decision(
            Outcome.DENY, "policy.unavailable",
            "The usage policy cannot be read, so nothing can be generated; an administrator has been told.",
            {"error": str(exc)[:500]})])
    context = UsageContext(purpose=purpose, num_images=num_images, user_images_today=images_requested_today(user),
                           group_images_today=group_images_today(user))
    return policies.usage.check_caption(caption, context)


def submit_request(*, caption: Any, num_images: Any = 4, seed: Any = None, purpose: str = "editorial",
                   user: Any = None) -> GenerationRequest:
    """Validate, run the usage policy, record the request and (if allowed) queue it after commit.

    Raises InvalidSubmission or NoActiveModel before anything is written. A caption the policy
    denies is recorded as POLICY_DENIED with its decisions and never reaches the queue.
    """
    caption, num_images, seed = validate_submission(caption, num_images, seed)
    model_version = active_model_version()
    verdict = check_usage(caption, purpose, num_images, user)
    with transaction.atomic():
        now = timezone.now()
        request = GenerationRequest.objects.create(
            caption=caption, num_images=num_images,
            seed=seed if seed is not None else secrets.randbelow(app_settings.MAX_SEED - 64),
            purpose=purpose, requested_by=user if getattr(user, "pk", None) else None,
            model_version=model_version, policy_version=verdict.policy_version,
            state=State.POLICY_DENIED if verdict.denied else State.QUEUED,
            flagged=verdict.needs_review, queued_at=None if verdict.denied else now,
        )
        _store_decisions(verdict, request=request)
        record_event(
            "request.denied" if verdict.denied else "request.queued", request, user,
            caption_sha256=hashlib.sha256(caption.encode()).hexdigest(), num_images=num_images,
            purpose=purpose, model_version=model_version.name, outcome=verdict.outcome.value,
            rules=[d.rule_id for d in verdict.decisions],
        )
        if not verdict.denied:
            transaction.on_commit(lambda: enqueue(request.pk))
    return request


def enqueue(request_id: int, countdown: float | None = None) -> None:
    """Send the task. A broker failure is logged, not raised: the row stays QUEUED and the sweeper
    sends it again, because the database, not the broker, is the source of truth."""
    from stackgan_django.tasks import generate

    try:
        generate.apply_async(args=[request_id], queue=app_settings.QUEUE, countdown=countdown)
    except Exception:
        logger.exception("could not enqueue request %s; the sweeper will retry", request_id)


# -- the worker's transitions ----------------------------------------------------------------------

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
                _store_decisions(output.verdict, request=request)
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
            _store_decisions(output.verdict, asset=asset)
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
            transaction.on_commit(lambda: enqueue(request.pk, countdown=5 * request.attempts))
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
        transaction.on_commit(lambda: enqueue(request.pk, countdown=countdown))
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
        transaction.on_commit(lambda: enqueue(request.pk))
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
            transaction.on_commit(lambda pk=pk: enqueue(pk))
            swept.append(pk)
    return swept


# -- review ----------------------------------------------------------------------------------------

REVIEW_TRANSITIONS = {
    Review.Decision.APPROVE: ({Asset.State.PENDING_REVIEW}, Asset.State.APPROVED),
    Review.Decision.REJECT: ({Asset.State.PENDING_REVIEW}, Asset.State.REJECTED),
    Review.Decision.REVOKE: ({Asset.State.APPROVED}, Asset.State.REVOKED),
}


def _review(asset_id: int, decision: str, reviewer: Any, note: str) -> Asset:
    allowed_from, target = REVIEW_TRANSITIONS[decision]
    with transaction.atomic():
        asset = Asset.objects.select_for_update().filter(pk=asset_id).first()
        if asset is None:
            raise WorkflowError(f"There is no asset with id {asset_id!r}.")
        if asset.state not in allowed_from:
            raise TransitionError(
                f"Asset {asset.pk} is {asset.get_state_display().lower()}; it cannot be {target.label.lower()}."
            )
        asset.state = target
        asset.decided_at = timezone.now()
        fields = ["state", "decided_at"]
        if target == Asset.State.APPROVED:
            _sign_approval(asset, reviewer, note)
            fields += ["approved_file", "approved_sha256", "provenance", "provenance_state"]
        asset.save(update_fields=fields)
        Review.objects.create(asset=asset, reviewer=reviewer if getattr(reviewer, "pk", None) else None,
                              decision=decision, note=note or "")
        record_event(f"asset.{target.value}", asset, reviewer, note=note or "", request=asset.request_id)
        return asset


def _sign_approval(asset: Asset, reviewer: Any, note: str) -> None:
    """Sign a review manifest whose parent ingredient is the generated file; keep both files."""
    from django.core.files.base import ContentFile

    from stackgan_django import provenance

    with asset.file.open("rb") as handle:
        generated = handle.read()
    reviewer_id = provenance.pseudonym("user", reviewer.pk) if getattr(reviewer, "pk", None) else "system"
    try:
        approved = provenance.sign_review(generated, asset_public_id=str(asset.public_id), decision="approve",
                                          reviewer=reviewer_id, note=note or "")
    except (provenance.SignerConfigurationError, provenance.SigningUnavailable) as exc:
        raise WorkflowError(f"The approval could not be signed, so the asset stays pending: {exc}") from exc
    name = asset.file.name.rsplit(".", 1)[0] + "-approved.png"
    asset.approved_file.save(name, ContentFile(approved), save=False)
    asset.approved_sha256 = hashlib.sha256(approved).hexdigest()
    asset.provenance = provenance.verify_bytes(approved).to_dict()
    asset.provenance_state = asset.provenance.get("state", "")


def approve_asset(asset_id: int, reviewer: Any, note: str = "") -> Asset:
    return _review(asset_id, Review.Decision.APPROVE, reviewer, note)


def reject_asset(asset_id: int, reviewer: Any, note: str = "") -> Asset:
    return _review(asset_id, Review.Decision.REJECT, reviewer, note)


def revoke_asset(asset_id: int, reviewer: Any, note: str = "") -> Asset:
    return _review(asset_id, Review.Decision.REVOKE, reviewer, note)


# -- model versions ----------------------------------------------------------------------------------

def register_model_version(name: str, checkpoint_path: str | Path, user: Any = None, notes: str = "",
                           activate: bool = False) -> ModelVersion:
    """Record a checkpoint folder (its hash, config and lineage) as a model version."""
    from generator.checkpoint import CheckpointError, checkpoint_sha256, read_config, read_json

    folder = Path(checkpoint_path).resolve()
    try:
        _, raw = read_config(folder)
        sha = checkpoint_sha256(folder)
        lineage = read_json(folder / "lineage.json") if (folder / "lineage.json").is_file() else {}
    except (CheckpointError, OSError) as exc:
        raise WorkflowError(f"{folder} is not a usable checkpoint: {exc}") from exc
    with transaction.atomic():
        model_version, created = ModelVersion.objects.get_or_create(
            name=name,
            defaults={"checkpoint_path": str(folder), "checkpoint_sha256": sha, "config": raw, "lineage": lineage,
                      "trained": bool(lineage.get("datasets")), "notes": notes},
        )
        if not created and model_version.checkpoint_sha256 != sha:
            raise WorkflowError(f"a model version named {name!r} already exists with other weights; choose a new name")
        if created:
            record_event("model.registered", model_version, user, checkpoint_sha256=sha, path=str(folder))
    if activate:
        activate_model_version(model_version.pk, user)
        model_version.refresh_from_db()
    return model_version


def activate_model_version(model_version_id: int, user: Any = None) -> ModelVersion:
    """Only a model whose training-data lineage passes the data policy may serve requests."""
    try:
        policies = current_policies()
    except PolicyError as exc:
        raise WorkflowError(f"The data policy cannot be read, so no model can be activated: {exc}") from exc
    with transaction.atomic():
        model_version = ModelVersion.objects.select_for_update().get(pk=model_version_id)
        verdict = policies.data.check_lineage(model_version.lineage or {})
        if verdict.denied:
            raise WorkflowError("This model cannot be activated: " + " ".join(verdict.reasons()))
        if model_version.is_active:
            return model_version
        ModelVersion.objects.select_for_update().filter(is_active=True).exclude(pk=model_version.pk).update(is_active=False)
        model_version.is_active = True
        model_version.save(update_fields=["is_active"])
        record_event("model.activated", model_version, user, policy_version=verdict.policy_version)
        return model_version


# -- verification ------------------------------------------------------------------------------------

def verify_file(data: bytes) -> dict[str, Any]:
    """Verify any file: its C2PA manifest, our watermark, and which asset (if any) it is.
    Used by the verify command, the admin upload page and the API. Never raises."""
    from django.db.models import Q

    from stackgan_django import provenance

    report = provenance.verify_bytes(data).to_dict()
    digest = hashlib.sha256(data).hexdigest()
    query = Q(sha256=digest) | Q(approved_sha256=digest)
    if report["watermark"].get("found"):
        query |= Q(mark_id=report["watermark"]["mark_id"])
    match = None
    for asset in Asset.objects.filter(query).select_related("request")[:1]:
        match = {"id": asset.pk, "public_id": str(asset.public_id), "state": asset.state,
                 "request_id": asset.request_id, "exact_file": digest in (asset.sha256, asset.approved_sha256),
                 "found_by": "file hash" if digest in (asset.sha256, asset.approved_sha256) else "watermark"}
    report["asset"] = match
    report["sha256"] = digest
    return report
