"""The errors every part of the workflow shares; each module adds its own beside them."""

from __future__ import annotations


class WorkflowError(Exception):
    """Base of the errors a user can act on; the message says what to do."""


class TransitionError(WorkflowError):
    """The record is not in a state that allows this step (already done, already decided, ...)."""
