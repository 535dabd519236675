"""The editor's conveniences on top of submission: one request per submitted form (double clicks,
re-sent POSTs) and "generate again with new seeds" in one click."""

from __future__ import annotations

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
