"""Storage against the database: files no asset owns (orphans: a worker killed between writing and
committing) and asset rows whose file is missing. The ``check_storage`` command calls these."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from stackgan_django.audit import record_event
from stackgan_django.conf import app_settings
from stackgan_django.models import Asset, GenerationRequest, asset_storage

logger = logging.getLogger(__name__)
# A file younger than this may belong to an attempt that is about to commit its row.
DEFAULT_MIN_AGE_SECONDS = 600


@dataclass
class StorageReport:
    orphans: list[str] = field(default_factory=list)
    missing: list[tuple[int, str, str]] = field(default_factory=list)  # (asset id, field, name)
    files_seen: int = 0
    skipped_recent: int = 0

    @property
    def ok(self) -> bool:
        return not self.orphans and not self.missing


def _walk(storage: Any, folder: str) -> list[str]:
    try:
        folders, files = storage.listdir(folder)
    except FileNotFoundError:
        return []
    names = [f"{folder}/{name}" for name in files]
    for sub in folders:
        names += _walk(storage, f"{folder}/{sub}")
    return names


def _referenced_names() -> set[str]:
    names: set[str] = set()
    for file_name, approved in Asset.objects.values_list("file", "approved_file").iterator(chunk_size=2000):
        names.update(n for n in (file_name, approved) if n)
    return names


def _names_being_written() -> set[str]:
    """Names a RUNNING request may be writing right now (its worker has not committed yet)."""
    from stackgan_django.services.worker import asset_file_name

    names = set()
    for request in GenerationRequest.objects.filter(state=GenerationRequest.State.RUNNING).only("public_id", "num_images"):
        names.update(asset_file_name(request, index) for index in range(request.num_images))
    return names


def check_storage(min_age_seconds: float = DEFAULT_MIN_AGE_SECONDS) -> StorageReport:
    """List orphan files under STORAGE_PREFIX (older than ``min_age_seconds``, not being written by a
    running request) and assets whose generated or approved file is missing."""
    storage = asset_storage()
    report = StorageReport()
    files = _walk(storage, app_settings.STORAGE_PREFIX)
    report.files_seen = len(files)
    referenced = _referenced_names()
    busy = _names_being_written()
    cutoff = timezone.now() - timedelta(seconds=min_age_seconds)
    for name in files:
        if name in referenced:
            continue
        if name in busy:
            report.skipped_recent += 1
            continue
        try:
            recent = min_age_seconds > 0 and storage.get_modified_time(name) > cutoff
        except (NotImplementedError, OSError):
            recent = False  # a storage that cannot say: judge by the rows alone
        if recent:
            report.skipped_recent += 1
            continue
        report.orphans.append(name)
    for asset_id, file_name, approved in Asset.objects.values_list("pk", "file", "approved_file").iterator(chunk_size=2000):
        for field_name, name in (("file", file_name), ("approved_file", approved)):
            if name and not storage.exists(name):
                report.missing.append((asset_id, field_name, name))
    return report


def delete_orphans(report: StorageReport, actor: Any = None) -> list[str]:
    """Delete the orphans a report found (re-checked against the rows first) and record it."""
    storage = asset_storage()
    referenced = _referenced_names() | _names_being_written()
    deleted = []
    for name in report.orphans:
        if name in referenced or not storage.exists(name):
            continue
        storage.delete(name)
        deleted.append(name)
    if deleted:
        with transaction.atomic():
            record_event("storage.orphans_deleted", None, actor or "check_storage", files=deleted[:1000], count=len(deleted))
    return deleted
