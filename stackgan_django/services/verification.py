"""Verifying any file: its C2PA manifest, our watermark, and which asset (if any) it is."""

from __future__ import annotations

import hashlib
from typing import Any

from django.db.models import Q

from stackgan_django.models import Asset


def verify_file(data: bytes, disclose_unapproved: bool = True) -> dict[str, Any]:
    """Used by the verify command, the admin upload page and the API. Never raises.

    ``disclose_unapproved=False`` (API callers without the review permission): a file of a pending,
    rejected or revoked asset is reported as ours but not which asset or in what state, so the
    endpoint cannot be used to find out about work nobody has approved."""
    from stackgan_django import provenance

    report = provenance.verify_bytes(data).to_dict()
    digest = hashlib.sha256(data).hexdigest()
    query = Q(sha256=digest) | Q(approved_sha256=digest)
    if report["watermark"].get("found"):
        query |= Q(mark_id=report["watermark"]["mark_id"])
    match = None
    for asset in Asset.objects.filter(query).select_related("request")[:1]:
        match = {"id": asset.pk, "public_id": str(asset.public_id), "state": asset.state,
                 "request_id": asset.request_id, "exact_file": digest in (asset.sha256, asset.approved_sha256),
                 "found_by": "file hash" if digest in (asset.sha256, asset.approved_sha256) else "watermark"}
    if match and match["state"] != Asset.State.APPROVED and not disclose_unapproved:
        match = {"id": None, "public_id": None, "state": "not disclosed", "request_id": None,
                 "exact_file": match["exact_file"], "found_by": match["found_by"]}
    elif match and not disclose_unapproved:
        # Internal row ids say how many assets exist; clients know assets by their public id.
        match = {**match, "id": None, "request_id": None}
    report["asset"] = match
    report["sha256"] = digest
    return report
