"""The errors every part of the workflow shares; each module adds its own beside them."""

from __future__ import annotations


class WorkflowError(Exception):
    """Base of the errors a user can act on; the message says what to do."""


class TransitionError(WorkflowError):
    """The record is not in a state that allows this step (already done, already decided, ...)."""


class ExplainedFailure(Exception):
    """A failure whose message is written for the editor who made the request: it names no server
    path or internal detail and says what happens next. Any other exception stopping a request is
    shown to the editor only as a reference into the worker's log and the audit trail."""
