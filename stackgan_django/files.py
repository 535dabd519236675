"""How a generated file may leave: through an authorised view (a logged-in person with the right
permission, or an API client with a key) or through a short-lived signed URL, and only while the
asset allows it. Revocation takes effect on the next request: nothing is cached in between."""

from __future__ import annotations

import hashlib
import io
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core import signing
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.urls import reverse
from django.utils.cache import get_conditional_response
from django.utils.http import http_date, quote_etag
from django.views.decorators.http import require_safe

from stackgan_django.conf import app_settings
from stackgan_django.models import Asset

logger = logging.getLogger(__name__)

SIGNED_URL_SALT = "stackgan_django.files.signed-url"
REVIEW_PERMISSION = "stackgan_django.review_asset"
VIEW_PERMISSION = "stackgan_django.view_asset"


def can_see_unapproved(user: Any) -> bool:
    """Pending, rejected and revoked files, and what verification says about them, are for
    compliance staff (the review permission) only; editors see approved assets like any client."""
    return bool(user and user.is_authenticated and user.has_perm(REVIEW_PERMISSION))


def may_download(user: Any, asset: Asset, approved_file: bool, *, requester_door: bool = False) -> bool:
    """The one rule for which file of an asset a person may fetch, whatever the door.

    Compliance staff (the review permission) may fetch every file: reviewing them is their job.
    Anyone else needs ``view_asset`` and gets the approved file only while the asset is approved,
    so a rejection or revocation stops every copy at once (a revoked asset's approved file still
    verifies as "approved", so it must not leave). ``requester_door``: the caller is the door that
    shows editors their own requests (the request page's images). There the editor who asked for
    the image may also see the generated file, while it waits for review (the page shows it live)
    or once approved, but not after a rejection or revocation, and not while it waits for a review
    that a policy rule asked for (``held_for_review``): that image is the reviewer's to see first.
    Only the requester: seeing other people's requests (``view_all_requests``) is not reviewing
    them, and their unreviewed images are compliance staff's (an attacker's probe found a manager
    served other editors' pending images through this door while the API's refused them)."""
    if can_see_unapproved(user):
        return True
    if not (user and user.is_authenticated and user.has_perm(VIEW_PERMISSION)):
        return False
    if approved_file:
        return asset.state == Asset.State.APPROVED and bool(asset.approved_file)
    if not requester_door or asset.request.requested_by_id != getattr(user, "pk", None):
        return False
    if asset.state == Asset.State.PENDING_REVIEW:
        return not held_for_review(asset)
    return asset.state == Asset.State.APPROVED


def held_for_review(asset: Asset) -> bool:
    """A pending image that a policy rule asked a reviewer to look at: a review decision on its
    request's caption (usage) or on the image itself (output). Its requester sees it only once a
    reviewer approves it; shown at once, a rejection came too late (the full-size file was kept).

    ``flagged`` is the record of those decisions: the request's is set from the usage verdict and
    the asset's from the request's and the output verdict, in the transaction that stores them
    (read from the flags, the rule costs lists of images no query per image). The request's is
    read as well, so the rule does not rest on the asset's copy of it."""
    return asset.state == Asset.State.PENDING_REVIEW and (asset.flagged or asset.request.flagged)


def asset_file_url(asset: Asset, user: Any = None, approved: bool | None = None) -> str | None:
    """The URL staff pages use for an asset's image (the approved file when there is one), or None
    when ``user`` (if given) may not see it. The URL itself checks again on every request."""
    use_approved = bool(asset.approved_file) if approved is None else approved
    field = asset.approved_file if use_approved else asset.file
    if not field:
        return None
    if user is not None and not may_download(user, asset, use_approved):
        return None
    return reverse("stackgan-staff-file", kwargs={"name": field.name})


def file_response(request: HttpRequest, asset: Asset, approved_file: bool, *, inline: bool = False) -> HttpResponse:
    """The file with a strong ETag (its SHA-256, checked against the stored bytes on every download:
    a file written over in storage is 404), Last-Modified, conditional GET (304 / 412) and a
    Content-Disposition naming it by the asset's public id (never by its storage name); ``inline``
    for pages that show the image rather than download it."""
    field = asset.approved_file if approved_file else asset.file
    digest = asset.approved_sha256 if approved_file else asset.sha256
    etag = quote_etag(digest)
    modified = asset.decided_at if approved_file and asset.decided_at else asset.created_at
    last_modified = int(modified.timestamp())
    conditional = get_conditional_response(request, etag=etag, last_modified=last_modified)
    if conditional is not None:
        if isinstance(conditional, HttpResponseNotModified):
            conditional["Cache-Control"] = "private, no-cache"
        return conditional
    try:
        with field.open("rb") as handle:
            data = handle.read()
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise Http404("The file is missing from storage.") from exc
    if hashlib.sha256(data).hexdigest() != digest:
        # Written over in storage since it was recorded: whatever it is now, it is not this asset's
        # file, and must not leave under its name, its ETag and its approval.
        logger.error("asset %s: the %s file in storage does not match its recorded SHA-256; not served",
                     asset.pk, "approved" if approved_file else "generated")
        raise Http404("The file in storage does not match the asset's record.")
    suffix = "" if approved_file else "-generated"
    response = FileResponse(io.BytesIO(data), content_type="image/png", as_attachment=not inline,
                            filename=f"{asset.public_id}{suffix}.png")
    response["ETag"] = etag
    response["Last-Modified"] = http_date(last_modified)
    # Private: a shared cache must not keep serving a file after its revocation.
    response["Cache-Control"] = "private, no-cache"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_safe
def staff_file(request: HttpRequest, name: str) -> HttpResponse:
    """What ``FieldFile.url`` of private storage points at (admin thumbnails and previews). Anyone
    not allowed to see this particular file gets the same 404 as for a name that does not exist."""
    # The session door of the admin: the admin itself turns away a user who is no longer staff, so
    # this does too, whatever permissions their groups still hold.
    if not (request.user.is_authenticated and request.user.is_active and request.user.is_staff):
        raise Http404("No such file.")
    asset = Asset.objects.filter(file=name).first()
    approved_file = False
    if asset is None:
        asset = Asset.objects.filter(approved_file=name).first()
        approved_file = asset is not None
    if asset is None or not may_download(request.user, asset, approved_file):
        raise Http404("No such file.")
    return file_response(request, asset, approved_file)


# -- signed URLs ---------------------------------------------------------------------------------

SIGNED_HASH_LENGTH = 32  # hex digits of the approved file's SHA-256 a signed URL names


def signed_url_token(asset: Asset) -> str:
    """Names the asset and the exact approved file; valid for STACKGAN["SIGNED_URL_MAX_AGE"] seconds."""
    return signing.TimestampSigner(salt=SIGNED_URL_SALT).sign_object(
        {"a": str(asset.public_id), "h": asset.approved_sha256[:SIGNED_HASH_LENGTH]}, compress=False)


def signed_url_expiry() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=app_settings.SIGNED_URL_MAX_AGE)


class BadSignedUrl(Exception):
    pass


def asset_from_signed_token(token: str) -> tuple[Asset | None, dict[str, str]]:
    """The asset the token names (any state: the caller decides), or BadSignedUrl when the token is
    forged, damaged or older than the allowed age."""
    if len(token) > 300:
        raise BadSignedUrl("The signed URL is malformed.")
    try:
        claims = signing.TimestampSigner(salt=SIGNED_URL_SALT).unsign_object(
            token, max_age=app_settings.SIGNED_URL_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise BadSignedUrl("The signed URL has expired; ask the API for a new one.") from exc
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise BadSignedUrl("The signed URL is invalid.") from exc
    # Checked in full even though the signature holds: a token signed with a leaked or published key
    # must still name one asset and one exact file, never a prefix of a hash or a value of another type.
    if (not isinstance(claims, dict) or not isinstance(claims.get("a"), str)
            or not isinstance(claims.get("h"), str) or len(claims["h"]) != SIGNED_HASH_LENGTH):
        raise BadSignedUrl("The signed URL is invalid.")
    asset = Asset.objects.filter(public_id=claims["a"]).first() if _is_uuid(claims["a"]) else None
    return asset, claims


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
