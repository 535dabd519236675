"""The workflow, one module per kind of action. Every state change of a request, asset or model
version happens in these modules: the transition is validated, saved, and written to the audit
log in one transaction. Admin, API, tasks and commands call these functions; none of them changes
state on its own. The public names are re-exported here so callers import from one place."""

from stackgan_django.conf import app_settings
from stackgan_django.services.api_keys import KEY_SCOPES, InvalidApiKey, create_api_key, revoke_api_key
from stackgan_django.services.delivery import GENERATE_TASK, enqueue
from stackgan_django.services.errors import TransitionError, WorkflowError
from stackgan_django.services.model_versions import activate_model_version, model_lineage, register_model_version
from stackgan_django.services.review import REVIEW_TRANSITIONS, approve_asset, reject_asset, revoke_asset
from stackgan_django.services.submission import (
    InvalidSubmission,
    NoActiveModel,
    active_model_version,
    check_usage,
    clean_caption,
    group_images_today,
    images_requested_today,
    submit_request,
    validate_submission,
)
from stackgan_django.services.verification import verify_file
from stackgan_django.services.webhooks import DELIVER_WEBHOOK_TASK, DeliveryOutcome, deliver_webhook, queue_webhooks
from stackgan_django.services.worker import (
    GeneratedOutput,
    UnknownRequest,
    defer_request,
    fail_request,
    finish_request,
    near_copy_index,
    new_mark_id,
    process_request,
    render_and_check,
    retry_request,
    stamp_output,
    start_request,
    sweep_stale_requests,
)

__all__ = [
    "GENERATE_TASK", "REVIEW_TRANSITIONS", "GeneratedOutput", "InvalidSubmission", "NoActiveModel", "TransitionError",
    "UnknownRequest", "WorkflowError", "activate_model_version", "active_model_version", "app_settings", "approve_asset",
    "check_usage", "clean_caption", "defer_request", "enqueue", "fail_request", "finish_request", "group_images_today",
    "images_requested_today", "model_lineage", "near_copy_index", "new_mark_id", "process_request", "register_model_version",
    "reject_asset", "render_and_check", "retry_request", "revoke_asset", "stamp_output", "start_request", "submit_request",
    "sweep_stale_requests", "validate_submission", "verify_file",
    # API v1 (issue 11)
    "DELIVER_WEBHOOK_TASK", "KEY_SCOPES", "DeliveryOutcome", "InvalidApiKey", "create_api_key", "deliver_webhook",
    "queue_webhooks", "revoke_api_key",
]
