"""Where a request stands, for the people waiting on it: the stage a worker last reported and the
request's place in the queue. Reading these never changes the request's state."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q
from django.utils import timezone

from stackgan_django.models import GenerationRequest
from stackgan_django.services.errors import WorkflowError

State = GenerationRequest.State
Progress = GenerationRequest.Progress

# The order the editor's page draws the steps in.
PROGRESS_STAGES: tuple[str, ...] = tuple(Progress.values)


def record_progress(request_id: int | Iterable[int], stage: str) -> bool:
    """Record that the worker has reached ``stage`` of a RUNNING request (a Progress value), or of
    several (a batch drawn in one pass reaches each stage together: one UPDATE for all of them).

    A plain UPDATE guarded by the state, not a locked read-modify-write: the worker calls this
    between steps while it may hold no transaction, and a stage of a request that is no longer
    running (taken over, finished) must not be written. Not audited: progress is not a state
    change, and the audit log records the transitions around it. Returns whether a row changed."""
    if stage not in PROGRESS_STAGES:
        raise WorkflowError(f"Unknown progress stage {stage!r}; expected one of {', '.join(PROGRESS_STAGES)}.")
    ids = [request_id] if isinstance(request_id, int) else list(request_id)
    updated = GenerationRequest.objects.filter(pk__in=ids, state=State.RUNNING).update(
        progress=stage, progress_at=timezone.now())
    return bool(updated)


def queue_position(request: GenerationRequest) -> int | None:
    """1 for the next request a worker will take, None unless the request is QUEUED.

    Counts the QUEUED rows queued before this one (ties broken by id), which is the order the
    workers take them in while no request is deferred; a deferred request may be overtaken."""
    if request.state != State.QUEUED or request.queued_at is None:
        return None
    ahead = GenerationRequest.objects.filter(state=State.QUEUED).filter(
        Q(queued_at__lt=request.queued_at) | Q(queued_at=request.queued_at, pk__lt=request.pk)).count()
    return ahead + 1


def progress_steps(request: GenerationRequest) -> list[dict[str, str]]:
    """The steps queued -> generate -> check -> sign -> done, each "done", "current" or "todo"."""
    steps = [("queued", "Queued")] + [(value, label) for value, label in Progress.choices] + [("done", "Ready for review")]
    keys = [key for key, _ in steps]
    if request.state == State.DONE:
        current = len(keys)  # every step done
    elif request.state == State.RUNNING:
        current = keys.index(request.progress) if request.progress in keys else keys.index(Progress.GENERATING)
    else:  # QUEUED, FAILED (shown as stopped at the start), POLICY_DENIED (never drawn)
        current = 0
    return [{"key": key, "label": label, "status": "done" if i < current else "current" if i == current else "todo"}
            for i, (key, label) in enumerate(steps)]
