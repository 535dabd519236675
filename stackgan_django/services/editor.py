"""The editor's conveniences on top of submission: one request per submitted form (double clicks,
re-sent POSTs) and "generate again with new seeds" in one click."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from stackgan_django.audit import record_event
from stackgan_django.models import GenerationRequest
from stackgan_django.services.errors import WorkflowError
from stackgan_django.services.submission import submit_request

State = GenerationRequest.State


def submit_once(submission_key: str, *, user: Any, **fields: Any) -> tuple[GenerationRequest, bool]:
    """Submit unless a request with this form token exists already; returns (request, created)."""
    return _once(submission_key, user, lambda: submit_request(user=user, **fields))


class IdempotencyKeyReused(WorkflowError):
    """An API client sent an Idempotency-Key again with another request body."""


# The Idempotency-Key header (IETF httpapi draft): visible ASCII, no spaces (a UUID, an order number),
# 1 to 255 characters; the API's schema states the same pattern.
MAX_IDEMPOTENCY_KEY_LENGTH = 255
IDEMPOTENCY_KEY_PATTERN = rf"^[!-~]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}$"


def submit_idempotent(idempotency_key: str, *, user: Any, caption: Any, num_images: Any, seed: Any = None,
                      purpose: str = "editorial") -> tuple[GenerationRequest, bool]:
    """An API submission under the client's Idempotency-Key: a retried POST (a lost answer, a timeout)
    finds the request the first one made instead of asking for the images twice. Returns (request,
    created). The key is the client's, so it is kept per user (hashed into the column the admin
    form's token uses); sent again with another body it is refused (409)."""
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, idempotency_key):
        raise WorkflowError(f"The Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII "
                            "characters without spaces, e.g. a UUID.")
    stored = f"api:{getattr(user, 'pk', '')}:{hashlib.sha256(idempotency_key.encode()).hexdigest()[:48]}"
    request, created = _once(stored, user, lambda: submit_request(caption=caption, num_images=num_images, seed=seed,
                                                                   purpose=purpose, user=user))
    if not created:
        sent = (caption, num_images, purpose) + ((seed,) if seed is not None else ())
        kept = (request.caption, request.num_images, request.purpose) + ((request.seed,) if seed is not None else ())
        if sent != kept:
            raise IdempotencyKeyReused("This Idempotency-Key was used for a request with another caption, number "
                                       "of images, seed or purpose; use a new key for a new request.")
    return request, created


def resubmit_once(submission_key: str, request_id: int, user: Any) -> tuple[GenerationRequest, bool]:
    """"Generate again" guarded like the new-request form: the button's page carries a token, so a
    double click or a re-sent POST leads to the request the first click made."""
    return _once(submission_key, user, lambda: resubmit_request(request_id, user))


def _once(submission_key: str, user: Any, make: Callable[[], GenerationRequest]) -> tuple[GenerationRequest, bool]:
    """Run ``make`` unless a request with this token exists already; returns (request, created).

    The user's row is locked for the check and the insert, so two POSTs of one form racing each
    other (a double click) serialise: the second finds the first's request. The key is unique in
    the database as well, the last line of defence."""
    if not submission_key or len(submission_key) > 64:
        raise WorkflowError("The form is missing its submission token; reload the page and try again.")
    with transaction.atomic():
        if getattr(user, "pk", None):
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        existing = GenerationRequest.objects.filter(submission_key=submission_key).first()
        if existing is not None:
            if existing.requested_by_id != getattr(user, "pk", None):
                raise WorkflowError("This form was submitted by someone else; reload the page and try again.")
            return existing, False
        request = make()
        GenerationRequest.objects.filter(pk=request.pk).update(submission_key=submission_key)
        request.submission_key = submission_key
        return request, True


def resubmit_request(request_id: int, user: Any) -> GenerationRequest:
    """The same caption, number of images and purpose with new seeds, as a new request that goes
    through the usage policy again (the policy may have changed since). A refused request cannot
    be generated again: its caption must change first."""
    original = GenerationRequest.objects.filter(pk=request_id).first()
    if original is None:
        raise WorkflowError(f"There is no generation request with id {request_id!r}.")
    if original.state == State.POLICY_DENIED:
        raise WorkflowError("This caption was refused by the usage policy; change the caption and make a new request.")
    with transaction.atomic():
        request = submit_request(caption=original.caption, num_images=original.num_images, seed=None,
                                 purpose=original.purpose, user=user)
        GenerationRequest.objects.filter(pk=request.pk).update(resubmission_of=original)
        request.resubmission_of = original
        record_event("request.resubmitted", request, user, original=original.pk)
    return request
