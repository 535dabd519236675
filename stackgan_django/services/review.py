"""Review: a person approves, rejects or revokes an asset; approval signs a review manifest whose
parent ingredient is the generated file, so the approved file carries its whole history."""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import transaction
from django.utils import timezone

from stackgan_django.audit import record_event
from stackgan_django.conf import app_settings
from stackgan_django.models import Asset, Review
from stackgan_django.services import webhooks
from stackgan_django.services.errors import TransitionError, WorkflowError
from stackgan_django.visible_text import has_words

REVIEW_TRANSITIONS = {
    Review.Decision.APPROVE: ({Asset.State.PENDING_REVIEW}, Asset.State.APPROVED),
    Review.Decision.REJECT: ({Asset.State.PENDING_REVIEW}, Asset.State.REJECTED),
    Review.Decision.REVOKE: ({Asset.State.APPROVED}, Asset.State.REVOKED),
}


def _review(asset_id: int, decision: str, reviewer: Any, note: str) -> Asset:
    allowed_from, target = REVIEW_TRANSITIONS[decision]
    # Stored as written, less the whitespace around it (the review, the audit event, the signed
    # manifest and the revocation reason clients get all carry the same text).
    note = (note or "").strip()
    with transaction.atomic():
        asset = Asset.objects.select_for_update().filter(pk=asset_id).first()
        if asset is None:
            raise WorkflowError(f"There is no asset with id {asset_id!r}.")
        if asset.state not in allowed_from:
            raise TransitionError(
                f"Asset {asset.pk} is {asset.get_state_display().lower()}; it cannot be {target.label.lower()}."
            )
        _refuse_self_review(asset, decision, reviewer)
        _require_note(asset, decision, note)
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
        if f"asset.{target.value}" in webhooks.WEBHOOK_EVENTS:
            webhooks.queue_webhooks(f"asset.{target.value}", asset, note or "")
        return asset


class SelfReview(WorkflowError):
    """The reviewer requested the asset themselves (separation of duties)."""


def _refuse_self_review(asset: Asset, decision: str, reviewer: Any) -> None:
    # Approval is the second pair of eyes on what an editor asked for; someone with both roles must
    # not be that second pair for their own request. Revoking withdraws an approval and stays open.
    if decision == Review.Decision.REVOKE or app_settings.ALLOW_SELF_REVIEW:
        return
    reviewer_id = getattr(reviewer, "pk", None)
    if reviewer_id is not None and reviewer_id == asset.request.requested_by_id:
        raise SelfReview("You requested this image, so another reviewer must approve or reject it "
                         "(separation of duties; STACKGAN['ALLOW_SELF_REVIEW'] turns this off).")


class NoteRequired(WorkflowError):
    """A decision that must be explained: a rejection, a revocation, or approving what a policy
    rule flagged."""


def _require_note(asset: Asset, decision: str, note: str) -> None:
    # The note is what a compliance officer shows afterwards to explain the decision; checked after
    # the state, so a decision on an already-decided asset still reports that first. A zero-width
    # space looks like no note on every page yet passed a check for non-whitespace.
    if has_words(note):
        return
    if decision == Review.Decision.REJECT:
        raise NoteRequired("Write a note saying why the image is rejected.")
    if decision == Review.Decision.REVOKE:
        # The note is the reason every client gets with the 410 and from verification.
        raise NoteRequired("Write a note saying why the approval is revoked.")
    if decision == Review.Decision.APPROVE and asset.flagged:
        raise NoteRequired("A policy rule flagged this image: write a note saying why it may be approved.")


def _sign_approval(asset: Asset, reviewer: Any, note: str) -> None:
    """Sign a review manifest whose parent ingredient is the generated file; keep both files."""
    from django.core.files.base import ContentFile

    from stackgan_django import provenance

    try:
        with asset.file.open("rb") as handle:
            generated = handle.read()
    except (OSError, ValueError) as exc:  # FileNotFoundError; ValueError: the field holds no name
        # Raised inside the review's transaction, before anything is written: the asset stays
        # pending, and approving again works once the file is back.
        raise WorkflowError(f"Asset {asset.pk}'s generated file cannot be read from storage "
                            f"({getattr(exc, 'strerror', None) or type(exc).__name__}), so the approval cannot be "
                            "signed; it stays pending. Restore the file (manage.py check_storage lists missing "
                            "files) or reject the asset.") from exc
    if hashlib.sha256(generated).hexdigest() != asset.sha256:
        # The review manifest takes this file as its parent and our signature vouches for the
        # result: a file written over in storage since the worker recorded its hash (pixels no
        # generator drew and no output policy checked) would leave as our approved asset.
        raise WorkflowError(f"Asset {asset.pk}'s generated file changed in storage since the worker stored it (its "
                            "SHA-256 is not the one recorded), so it cannot be approved; it stays pending. Restore "
                            "the original file or reject the asset.")
    reviewer_id = provenance.pseudonym("user", reviewer.pk) if getattr(reviewer, "pk", None) else "system"
    try:
        approved = provenance.sign_review(generated, asset_public_id=str(asset.public_id), decision="approve",
                                          reviewer=reviewer_id, note=note or "")
    except (provenance.SignerConfigurationError, provenance.SigningUnavailable) as exc:
        raise WorkflowError(f"The approval could not be signed, so the asset stays pending: {exc}") from exc
    # The field stores it under a keyed hash of this proposal (models.private_asset_name): nothing in
    # the stored name ties it to the generated file or to the request.
    try:
        asset.approved_file.save(f"{asset.file.name}.approved.png", ContentFile(approved), save=False)
    except OSError as exc:
        # Nothing is saved in the database; a partly written file is an orphan check_storage removes.
        raise WorkflowError(f"The approved file of asset {asset.pk} could not be stored ({exc.strerror or exc}); "
                            "it stays pending. Try again when the storage is writable.") from exc
    asset.approved_sha256 = hashlib.sha256(approved).hexdigest()
    asset.provenance = provenance.verify_bytes(approved).to_dict()
    asset.provenance_state = asset.provenance.get("state", "")


def revocation_of(asset: Asset) -> tuple[str, Any]:
    """The reason and time of an asset's latest revocation, as its revoke review recorded them."""
    review = asset.reviews.filter(decision=Review.Decision.REVOKE).order_by("-created_at").first()
    if review is not None:
        return review.note, review.created_at
    return "", asset.decided_at


def approve_asset(asset_id: int, reviewer: Any, note: str = "") -> Asset:
    return _review(asset_id, Review.Decision.APPROVE, reviewer, note)


def reject_asset(asset_id: int, reviewer: Any, note: str = "") -> Asset:
    return _review(asset_id, Review.Decision.REJECT, reviewer, note)


def revoke_asset(asset_id: int, reviewer: Any, note: str = "") -> Asset:
    return _review(asset_id, Review.Decision.REVOKE, reviewer, note)


def approve_assets(asset_ids: list[int], reviewer: Any, note: str = "") -> tuple[list[Asset], dict[int, str]]:
    """Bulk approval: one audited approval (and one signed review manifest) per asset, each in its
    own transaction, so one that cannot be approved (decided meanwhile, flagged without a note, its
    file missing from storage) leaves the others approved. Returns the approved assets and the refusals by asset id."""
    approved, refused = [], {}
    for asset_id in asset_ids:
        try:
            approved.append(approve_asset(asset_id, reviewer, note))
        except WorkflowError as exc:
            refused[asset_id] = str(exc)
    return approved, refused
