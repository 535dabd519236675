"""The workflow, one module per kind of action. Every state change of a request, asset or model
version happens in these modules: the transition is validated, saved, and written to the audit
log in one transaction. Admin, API, tasks and commands call these functions; none of them changes
state on its own. The public names are re-exported here so callers import from one place."""

from stackgan_django.conf import app_settings
from stackgan_django.services.api_keys import KEY_SCOPES, InvalidApiKey, create_api_key, revoke_api_key
from stackgan_django.services.delivery import GENERATE_TASK, MAINTENANCE_TASK, enqueue, queue_depth, send_pending_requests
from stackgan_django.services.editor import (
    IdempotencyKeyReused,
    resubmit_once,
    resubmit_request,
    submit_idempotent,
    submit_once,
)
from stackgan_django.services.errors import TransitionError, WorkflowError
from stackgan_django.services.model_versions import (
    activate_model_version,
    delete_model_version,
    model_lineage,
    register_model_version,
)
from stackgan_django.services.progress import PROGRESS_STAGES, progress_steps, queue_position, record_progress
from stackgan_django.services.review import (
    REVIEW_TRANSITIONS,
    NoteRequired,
    SelfReview,
    approve_asset,
    approve_assets,
    reject_asset,
    revocation_of,
    revoke_asset,
)
from stackgan_django.services.storage_check import StorageReport, check_storage, delete_orphans
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
from stackgan_django.services.verification import FILE_VERDICTS, verify_file
from stackgan_django.services.webhooks import DELIVER_WEBHOOK_TASK, DeliveryOutcome, deliver_webhook, queue_webhooks
from stackgan_django.services.worker import (
    GeneratedOutput,
    LeaseKeeper,
    LeaseLost,
    UnknownRequest,
    asset_file_name,
    claim_waiting_requests,
    defer_request,
    fail_request,
    finish_request,
    near_copy_index,
    new_mark_id,
    new_mark_ids,
    process_request,
    recover_lapsed_leases,
    remove_unowned_files,
    render_and_check,
    retry_request,
    run_maintenance,
    stamp_output,
    start_request,
    sweep_stale_requests,
)

__all__ = [
    "GENERATE_TASK", "REVIEW_TRANSITIONS", "GeneratedOutput", "InvalidSubmission", "NoActiveModel", "TransitionError",
    "UnknownRequest", "WorkflowError", "activate_model_version", "active_model_version", "app_settings", "approve_asset",
    "check_usage", "clean_caption", "defer_request", "enqueue", "fail_request", "finish_request", "group_images_today",
    "images_requested_today", "delete_model_version", "model_lineage", "near_copy_index", "new_mark_id", "process_request", "register_model_version",
    "reject_asset", "render_and_check", "retry_request", "revoke_asset", "stamp_output", "start_request", "submit_request",
    "sweep_stale_requests", "validate_submission", "verify_file", "FILE_VERDICTS",
    # reliability (issue 13)
    "MAINTENANCE_TASK", "LeaseKeeper", "LeaseLost", "StorageReport", "asset_file_name", "check_storage", "delete_orphans",
    "queue_depth", "recover_lapsed_leases", "remove_unowned_files", "run_maintenance", "send_pending_requests",
    # issue 15: editor and review desks
    "NoteRequired", "SelfReview", "PROGRESS_STAGES", "approve_assets", "progress_steps", "queue_position", "record_progress",
    "resubmit_once", "resubmit_request", "submit_once", "submit_idempotent", "IdempotencyKeyReused",
    # API v1 (issue 11)
    "DELIVER_WEBHOOK_TASK", "KEY_SCOPES", "DeliveryOutcome", "InvalidApiKey", "create_api_key", "deliver_webhook",
    "queue_webhooks", "revoke_api_key",
    # issue 16: batching across requests
    "claim_waiting_requests", "new_mark_ids",
    "revocation_of",
]
