"""Domain records: model versions, generation requests, assets, policy decisions, reviews and the
hash-chained audit log. State changes go through stackgan_django.services, never direct saves."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from lineage import Lineage, LineageError


class ModelVersion(models.Model):
    """A checkpoint folder the workers can load, with the data it was trained on."""

    name = models.CharField(max_length=100, unique=True)
    checkpoint_path = models.CharField(max_length=500, help_text="folder with config.json and generator.safetensors")
    checkpoint_sha256 = models.CharField(max_length=64)
    near_copy_index_sha256 = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 of the folder's near_copies.json when registered; empty if it had none")
    config = models.JSONField(default=dict, blank=True)
    lineage = models.JSONField(default=dict, blank=True, help_text="datasets, licences and training run")
    trained = models.BooleanField(default=True, help_text="False for a randomly initialised network")
    is_active = models.BooleanField(default=False)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_model_version"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({'active' if self.is_active else 'inactive'})"

    @property
    def parsed_lineage(self) -> Lineage | None:
        """The lineage read through its schema, or None when there is none that parses: readers show
        nothing rather than guess from raw keys (and activation refuses such a model)."""
        if not self.lineage:
            return None
        try:
            return Lineage.from_dict(self.lineage)
        except LineageError:
            return None


class GenerationRequest(models.Model):
    class State(models.TextChoices):
        POLICY_DENIED = "policy_denied", "Refused by policy"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    caption = models.TextField()
    num_images = models.PositiveSmallIntegerField(default=4)
    seed = models.BigIntegerField(null=True, blank=True, help_text="base seed; image i uses seed + i")
    purpose = models.CharField(max_length=50, default="editorial")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED, db_index=True)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    policy_version = models.CharField(max_length=64, blank=True)
    flagged = models.BooleanField(default=False, help_text="a policy rule asked for extra review")
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    compute_seconds = models.FloatField(null=True, blank=True)
    # Reliability (issue 13): the outbox mark and the running worker's lease.
    sent_at = models.DateTimeField(null=True, blank=True,
                                   help_text="when the broker last took this QUEUED request; empty = still to send")
    lease_expires_at = models.DateTimeField(null=True, blank=True,
                                            help_text="a RUNNING request whose lease lapsed lost its worker")
    worker = models.CharField(max_length=200, blank=True, help_text="host and process of the last worker")

    # -- editor desk (issue 15): live progress, one submission per form, "generate again" --
    class Progress(models.TextChoices):
        GENERATING = "generating", "Generating the images"
        CHECKING = "checking", "Checking them against the output policy"
        SIGNING = "signing", "Signing their provenance"

    # The stage a running worker last reported; the editor's page shows it (services.record_progress).
    progress = models.CharField(max_length=20, choices=Progress.choices, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True)
    # The token of the form that submitted it: a double-click or a re-sent POST finds this row
    # instead of creating a second request (services.submit_once).
    submission_key = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    resubmission_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="resubmissions",
                                        help_text="the request this one generates again with new seeds")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "queued_at"], name="request_state_queued")]
        permissions = [
            ("view_all_requests", "Can see every user's generation requests and their images"),
            ("view_pilot_report", "Can see the pilot report"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.caption[:50]!r} ({self.get_state_display()})"


def asset_storage():
    """The private storage that holds generated files (STACKGAN["STORAGE"]): served by no URL of its
    own, only through the app's authorised views (stackgan_django.storage)."""
    from stackgan_django.storage import private_storage

    return private_storage


def private_asset_name(instance, filename: str) -> str:
    """The stored name: a keyed hash of the name the caller proposed (see stackgan_django.storage)."""
    from stackgan_django.storage import private_asset_name as name

    return name(instance, filename)


class Asset(models.Model):
    class State(models.TextChoices):
        PENDING_REVIEW = "pending_review", "Pending review"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        REVOKED = "revoked", "Revoked"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    request = models.ForeignKey(GenerationRequest, on_delete=models.PROTECT, related_name="assets")
    index = models.PositiveSmallIntegerField()
    file = models.FileField(storage=asset_storage, upload_to=private_asset_name, max_length=300)
    sha256 = models.CharField(max_length=64)
    seed = models.BigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING_REVIEW, db_index=True)
    flagged = models.BooleanField(default=False)
    mark_id = models.PositiveBigIntegerField(null=True, blank=True, unique=True,
                                             help_text="id carried by the invisible watermark")
    approved_file = models.FileField(storage=asset_storage, upload_to=private_asset_name, max_length=300, blank=True,
                                     help_text="the signed file with the review manifest; what the API serves")
    approved_sha256 = models.CharField(max_length=64, blank=True)
    provenance_state = models.CharField(max_length=20, blank=True, help_text="C2PA validation when signed")
    provenance = models.JSONField(default=dict, blank=True, help_text="verification report of the stored file")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "index"]
        constraints = [models.UniqueConstraint(fields=["request", "index"], name="one_asset_per_request_index")]
        permissions = [("review_asset", "Can approve, reject and revoke assets")]

    def __str__(self) -> str:
        return f"asset {self.pk} of request {self.request_id} [{self.index}]"


class PolicyDecision(models.Model):
    class Stage(models.TextChoices):
        USAGE = "usage", "Usage (caption)"
        OUTPUT = "output", "Output (image)"
        DATA = "data", "Data (training set)"

    class Outcome(models.TextChoices):
        ALLOW = "allow", "Allow"
        REVIEW = "review", "Review"
        DENY = "deny", "Deny"

    request = models.ForeignKey(GenerationRequest, null=True, blank=True, on_delete=models.CASCADE, related_name="decisions")
    asset = models.ForeignKey(Asset, null=True, blank=True, on_delete=models.CASCADE, related_name="decisions")
    stage = models.CharField(max_length=10, choices=Stage.choices)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    rule_id = models.CharField(max_length=100)
    message = models.TextField()
    evidence = models.JSONField(default=dict, blank=True)
    policy_version = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.outcome} {self.rule_id}"


class Review(models.Model):
    class Decision(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"
        REVOKE = "revoke", "Revoke"

    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.decision} of asset {self.asset_id}"


class AppendOnlyError(Exception):
    pass


class AuditEvent(models.Model):
    """One step in the tamper-evident log: each event stores the hash of the one before it.

    ``sequence`` and ``previous_hash`` are unique, so two writers can never fork the chain; the
    loser of a race retries on the new head (see stackgan_django.audit).
    """

    sequence = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField()
    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=50, db_index=True)
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    previous_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["sequence"]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} {self.object_type}:{self.object_id} by {self.actor}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise AppendOnlyError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("audit events are append-only")


# -- API v1: keys, webhooks (issue 11) ----------------------------------------------------------------

from rest_framework_api_key.models import AbstractAPIKey  # noqa: E402  (the block is self-contained)


class ApiKey(AbstractAPIKey):
    """A client's key: hashed at rest (only its prefix is readable), shown once, with scopes, an
    expiry and revocation. It acts as its user, so Django's model permissions apply as well."""

    class Scope(models.TextChoices):
        READ_ASSETS = "assets:read", "Read and download approved assets"
        REQUEST_IMAGES = "requests:write", "Request images and poll for them"
        VERIFY = "verify", "Verify files"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stackgan_api_keys",
                             help_text="the key acts as this user: the user's permissions apply as well as the scopes")
    scopes = models.JSONField(default=list, blank=True, help_text="what the key may do: " + ", ".join(Scope.values))

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])


class WebhookDelivery(models.Model):
    """One event for one endpoint (approve or revoke of an asset); its attempts are recorded below."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    event = models.CharField(max_length=50)
    asset = models.ForeignKey(Asset, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_deliveries")
    url = models.URLField(max_length=500)
    payload = models.JSONField(default=dict)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} to {self.url} ({self.state})"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_records")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}: {self.status_code or self.error[:40]}"
