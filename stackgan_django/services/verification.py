"""Verifying any file: its C2PA manifest, our watermark, and which asset (if any) it is."""

from __future__ import annotations

import hashlib
import io
import logging
from typing import Any

import numpy as np
from django.db.models import Q
from PIL import Image, UnidentifiedImageError

from stackgan_django.models import Asset
from stackgan_django.services.review import revocation_of

logger = logging.getLogger(__name__)

# The picture check for a file found only by its watermark: both images as a THUMBNAIL x THUMBNAIL
# grey thumbnail, compared by RMSE (0-255 scale). Measured on generated assets
# (tests/test_provenance.py): JPEG at quality 50-90 and resizing to 128 or 512 px stay under 1;
# other pictures carrying a copied mark were 66 or more apart. The bound sits well between, nearer
# the copies, since a forger may pick a picture that looks somewhat alike.
THUMBNAIL = 16
SAME_PICTURE_RMSE = 10.0

# What the file itself is (the report's "file"): the answer to "may I publish this file?", apart from
# the state of the asset it came from ("asset.state"). Only the first is a yes.
APPROVED_FILE = "approved file"  # byte for byte a file of an approved asset
DERIVED_COPY = "derived copy"  # pixels of an approved asset, not its file: re-encoded, resized or altered
NOT_APPROVED = "not approved"  # the file, or a copy, of an asset that is not approved (or not disclosed)
UNCONFIRMED = "unconfirmed"  # a mark of ours on a picture that is not the asset's
NOT_OURS = "not ours"
FILE_VERDICTS = (APPROVED_FILE, DERIVED_COPY, NOT_APPROVED, UNCONFIRMED, NOT_OURS)

UNCONFIRMED_MESSAGE = ("The file carries a watermark of ours, but its picture does not match the asset the mark "
                       "belongs to: the mark may have been copied onto another image. It is not an approved asset.")


def grey_thumbnail(image: Image.Image) -> np.ndarray:
    """A small grey version: JPEG noise, resizing and our (tiny) watermark average out, the
    picture's layout stays."""
    return np.asarray(image.convert("L").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX), dtype=np.float64)


def picture_distance(a: Image.Image, b: Image.Image) -> float:
    """RMSE between the grey thumbnails of two images (0 the same picture, 255 at most)."""
    return float(np.sqrt(((grey_thumbnail(a) - grey_thumbnail(b)) ** 2).mean()))


def _same_picture(data: bytes, asset: Asset) -> bool:
    """Whether the submitted pixels are the asset's picture. False when either cannot be read: a
    match we cannot confirm is not reported as the asset."""
    try:
        with Image.open(io.BytesIO(data)) as submitted, asset.file.open("rb") as handle, Image.open(handle) as stored:
            return picture_distance(submitted, stored) <= SAME_PICTURE_RMSE
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        logger.warning("cannot compare a watermarked file with asset %s: %s", asset.pk, exc)
        return False


def verify_file(data: bytes, disclose_unapproved: bool = True) -> dict[str, Any]:
    """Used by the verify command, the admin upload page and the API. Never raises.

    ``disclose_unapproved=False`` (API callers without the review permission): a file of a pending,
    rejected or revoked asset is reported as ours but not which asset or in what state, so the
    endpoint cannot be used to find out about work nobody has approved. One exception: the exact
    approved file of an asset revoked since is reported as revoked (with when and why), because
    that is the copy clients were given and must stop using.

    A file found only by its watermark is the asset only if its picture matches the asset's: the
    mark is a noise pattern anyone can estimate from an approved file and add to another picture.
    Otherwise the asset is reported with state "unconfirmed" and no id for anyone but reviewers.

    ``asset.state`` is the asset's state, not the file's: a re-encoded or altered copy of an
    approved asset names the approved asset. What the file itself is, is ``file`` (FILE_VERDICTS)
    with ``file_message``: only "approved file" (found by its hash) is the file we approved."""
    from stackgan_django import provenance

    report = provenance.verify_bytes(data).to_dict()
    digest = hashlib.sha256(data).hexdigest()
    query = Q(sha256=digest) | Q(approved_sha256=digest)
    if report["watermark"].get("found"):
        query |= Q(mark_id=report["watermark"]["mark_id"])
    match = None
    for asset in Asset.objects.filter(query).select_related("request")[:1]:
        exact = digest in (asset.sha256, asset.approved_sha256)
        match = {"id": asset.pk, "public_id": str(asset.public_id), "state": asset.state,
                 "request_id": asset.request_id, "exact_file": exact,
                 "found_by": "file hash" if exact else "watermark"}
        if not exact and not _same_picture(data, asset):
            match = _unconfirmed(match, disclose_unapproved)
        elif asset.state == Asset.State.REVOKED and (disclose_unapproved or digest == asset.approved_sha256):
            reason, revoked_at = revocation_of(asset)
            match = {**match, "revoked_at": revoked_at.isoformat() if revoked_at else None, "reason": reason}
            if not disclose_unapproved:
                # Clients know the asset by its public id (the file's review manifest names it).
                match = {**match, "id": None, "request_id": None}
        elif match["state"] != Asset.State.APPROVED and not disclose_unapproved:
            match = {"id": None, "public_id": None, "state": "not disclosed", "request_id": None,
                     "exact_file": match["exact_file"], "found_by": match["found_by"]}
        elif not disclose_unapproved:
            # Internal row ids say how many assets exist; clients know assets by their public id.
            match = {**match, "id": None, "request_id": None}
    report["asset"] = match
    report["file"], report["file_message"] = file_verdict(match, report["state"])
    report["sha256"] = digest
    return report


def file_verdict(match: dict[str, Any] | None, provenance_state: str) -> tuple[str, str]:
    """What the file is (one of FILE_VERDICTS) and a sentence saying so.

    The watermark, and the picture check after it, say which asset the pixels came from; they
    cannot say that nothing was added (a caption, a box drawn on the picture survives both). Only
    the file we approved, found by its hash, is the approved asset; anything else found by its mark
    is a copy derived from it, whatever its manifest (ours signs only the files whose hashes we keep)."""
    if match is None:
        return NOT_OURS, "No asset of ours matches this file by hash or by watermark."
    if match["state"] == UNCONFIRMED:
        return UNCONFIRMED, UNCONFIRMED_MESSAGE
    if match["state"] != Asset.State.APPROVED:
        return NOT_APPROVED, "The file comes from an asset of ours that is not approved: do not publish it."
    name = f"approved asset {match['public_id']}"
    if match["exact_file"]:
        return APPROVED_FILE, f"Byte for byte a file of {name}: it may be published under the asset's terms."
    signed = ("it was signed again by another signer after we approved it" if provenance_state == "Trusted"
              else f"it carries no valid provenance of ours (provenance: {provenance_state})")
    return DERIVED_COPY, (f"A copy derived from {name}, found by its watermark: this file itself is not the approved "
                          f"file, and {signed}. It may have been re-encoded or altered (text or marks drawn on it); "
                          "use the approved file instead.")


def _unconfirmed(match: dict[str, Any], disclose_unapproved: bool) -> dict[str, Any]:
    """A mark of ours on a picture that is not the asset's: never the asset's state. Reviewers
    keep the ids to look into whose mark was copied; nobody else learns which asset it was."""
    unconfirmed = {**match, "state": "unconfirmed", "content_matches": False, "message": UNCONFIRMED_MESSAGE}
    if disclose_unapproved:
        return {**unconfirmed, "asset_state": match["state"]}
    return {**unconfirmed, "id": None, "public_id": None, "request_id": None}
