"""Submitting a request: validation, the usage policy, quotas, and the QUEUED or POLICY_DENIED row."""

from __future__ import annotations

import hashlib
import logging
import secrets
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from policies import Decision, Outcome, PolicyError, UsageContext, UsagePolicy, Verdict
from stackgan_django.audit import record_event
from stackgan_django.conf import app_settings
from stackgan_django.governance import current_policies
from stackgan_django.models import GenerationRequest, ModelVersion
from stackgan_django.services import delivery
from stackgan_django.services.decisions import store_decisions
from stackgan_django.services.errors import WorkflowError
from stackgan_django.visible_text import has_visible_text

logger = logging.getLogger(__name__)
State = GenerationRequest.State


class InvalidSubmission(WorkflowError):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class NoActiveModel(WorkflowError):
    pass


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
        if not has_visible_text(cleaned):
            # An input error like an empty caption, not a policy refusal: it would be recorded as
            # a denied request and counted in the pilot report's refusals.
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


# The daily quotas count the images asked for in this window, up to now.
QUOTA_WINDOW = timedelta(days=1)


def asked_for_since(since: datetime) -> Q:
    """Requests asked for since ``since``: made then, or queued again then (a person's retry, or a
    worker's, queues an old request anew). By creation alone, a request made days ago and retried
    today drew its images outside every count, and retrying old failed requests passed the quota."""
    return Q(created_at__gte=since) | Q(queued_at__gte=since)


def _images_since(**filters: Any) -> int:
    since = timezone.now() - QUOTA_WINDOW
    return (GenerationRequest.objects.filter(asked_for_since(since), **filters)
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


def lock_quota(user: Any) -> None:
    """Lock the rows the daily quotas are counted for, until the caller's transaction ends.

    Counting today's images and inserting the new request must be one step: otherwise concurrent
    submissions all count the same total and all pass (six requests of 8 at 490/500 reached 538).
    The user's row serialises one user's submissions; the group rows serialise a group's, taken in
    primary-key order so two members never wait on each other in a cycle. SQLite serialises
    writers already (IMMEDIATE transactions); there this is a no-op. Call inside transaction.atomic.
    """
    if user is None or not getattr(user, "pk", None):
        return
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    list(Group.objects.select_for_update().filter(user=user).order_by("pk").values_list("pk", flat=True))


def judge_caption(caption: str, purpose: str, num_images: int) -> tuple[Verdict, UsagePolicy | None]:
    """The usage verdict on everything but the daily quotas, and the policy that made it (None: the
    policy files cannot be read, and the verdict is a denial that says so: fail closed).

    This is the costly part (the semantic layer reads the caption), so callers run it before taking
    the quota lock and add the quotas under it (``add_quota_decisions``)."""
    try:
        policies = current_policies()
    except PolicyError as exc:
        logger.error("usage policy unavailable, refusing: %s", exc)
        return Verdict("usage", "unavailable", [Decision(
            Outcome.DENY, "policy.unavailable",
            "The usage policy cannot be read, so nothing can be generated; an administrator has been told.",
            {"error": str(exc)[:500]})]), None
    context = UsageContext(purpose=purpose, num_images=num_images)
    return policies.usage.check_caption(caption, context, count_quotas=False), policies.usage


def add_quota_decisions(verdict: Verdict, usage: UsagePolicy | None, num_images: int, user: Any,
                        already_counted: int = 0) -> Verdict:
    """Count today's images and add the quotas' decisions, judged by ``usage`` (the policy that made
    ``verdict``, so one request's decisions always come from one policy version).

    ``already_counted``: images of this same request that today's totals include already (a retry
    of a request made today), so they are not counted twice. Race-free only while the caller holds
    lock_quota(user) until its insert commits."""
    if usage is None:
        return verdict
    context = UsageContext(
        num_images=num_images,
        user_images_today=max(0, images_requested_today(user) - already_counted),
        group_images_today={name: max(0, total - already_counted) for name, total in group_images_today(user).items()})
    verdict.decisions.extend(usage.check_quotas(context))
    return verdict


def check_usage(caption: str, purpose: str, num_images: int, user: Any, already_counted: int = 0) -> Verdict:
    """The whole usage verdict, caption and quotas. The quota part is only race-free if the caller
    holds lock_quota(user) until its insert commits; prefer judging the caption before the lock."""
    verdict, usage = judge_caption(caption, purpose, num_images)
    return add_quota_decisions(verdict, usage, num_images, user, already_counted)


def submit_request(*, caption: Any, num_images: Any = 4, seed: Any = None, purpose: str = "editorial",
                   user: Any = None) -> GenerationRequest:
    """Validate, run the usage policy, record the request and (if allowed) queue it after commit.

    Raises InvalidSubmission or NoActiveModel before anything is written. A caption the policy
    denies is recorded as POLICY_DENIED with its decisions and never reaches the queue.
    """
    caption, num_images, seed = validate_submission(caption, num_images, seed)
    model_version = active_model_version()
    # The caption is judged before the quota lock: on SQLite the lock is the database's one write
    # lock, and the semantic layer's tens of milliseconds must not hold every other writer back.
    verdict, usage = judge_caption(caption, purpose, num_images)
    with transaction.atomic():
        lock_quota(user)
        add_quota_decisions(verdict, usage, num_images, user)
        now = timezone.now()
        request = GenerationRequest.objects.create(
            caption=caption, num_images=num_images,
            seed=seed if seed is not None else secrets.randbelow(app_settings.MAX_SEED - 64),
            purpose=purpose, requested_by=user if getattr(user, "pk", None) else None,
            model_version=model_version, policy_version=verdict.policy_version,
            state=State.POLICY_DENIED if verdict.denied else State.QUEUED,
            flagged=verdict.needs_review, queued_at=None if verdict.denied else now,
        )
        store_decisions(verdict, request=request)
        record_event(
            "request.denied" if verdict.denied else "request.queued", request, user,
            caption_sha256=hashlib.sha256(caption.encode()).hexdigest(), num_images=num_images,
            purpose=purpose, model_version=model_version.name, outcome=verdict.outcome.value,
            rules=[d.rule_id for d in verdict.decisions],
        )
        if not verdict.denied:
            transaction.on_commit(lambda: send_after_submit(request.pk))
    return request


def send_after_submit(request_id: int) -> None:
    """Send the new request; when the broker took it, also send what earlier submissions could not
    (the outbox), so a site whose broker came back recovers on its next submission too."""
    if delivery.enqueue(request_id) is False:
        return
    try:
        delivery.send_pending_requests(include_lost=False, limit=20)
    except Exception:  # the editor's request is recorded and sent; the periodic task retries the rest
        logger.exception("could not send the outbox after a submission")
