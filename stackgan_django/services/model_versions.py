"""Model versions: recording a checkpoint (hash, config, lineage) and activating it, which only a
lineage that passes the data policy allows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction

from lineage import LINEAGE_FILE, Lineage, LineageError, loads_strict
from policies import PolicyError
from policies.near_copy import near_copy_index_sha256
from stackgan_django.audit import record_event
from stackgan_django.governance import current_policies
from stackgan_django.models import ModelVersion
from stackgan_django.services.errors import WorkflowError


def _read_lineage_for_record(folder: Path) -> tuple[dict[str, Any], bool]:
    """The lineage to keep on the row, normalised to the schema when it parses. One that does not
    parse is kept as found (so a person can see what is wrong) and activation refuses it."""
    path = folder / LINEAGE_FILE
    if not path.is_file():
        return {}, False
    try:
        raw = loads_strict(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise WorkflowError(f"{path} is not readable JSON: {exc}") from exc
    try:
        parsed = Lineage.from_dict(raw)
    except LineageError:
        return raw if isinstance(raw, dict) else {"unreadable": str(raw)[:500]}, False
    return parsed.to_dict(), parsed.trained


def register_model_version(name: str, checkpoint_path: str | Path, user: Any = None, notes: str = "",
                           activate: bool = False) -> ModelVersion:
    """Record a checkpoint folder (its hash, config and lineage) as a model version."""
    from generator.checkpoint import CheckpointError, checkpoint_sha256, read_config

    folder = Path(checkpoint_path).resolve()
    try:
        _, raw = read_config(folder)
        sha = checkpoint_sha256(folder)
        index_sha = near_copy_index_sha256(folder)
    except (CheckpointError, OSError) as exc:
        raise WorkflowError(f"{folder} is not a usable checkpoint: {exc}") from exc
    lineage, trained = _read_lineage_for_record(folder)
    with transaction.atomic():
        model_version, created = ModelVersion.objects.get_or_create(
            name=name,
            defaults={"checkpoint_path": str(folder), "checkpoint_sha256": sha, "near_copy_index_sha256": index_sha,
                      "config": raw, "lineage": lineage, "trained": trained, "notes": notes},
        )
        if not created and model_version.checkpoint_sha256 != sha:
            raise WorkflowError(f"a model version named {name!r} already exists with other weights; choose a new name")
        if not created and model_version.near_copy_index_sha256 != index_sha:
            raise WorkflowError(f"a model version named {name!r} already exists with another near-copy index "
                                "(near_copies.json); choose a new name")
        if created:
            record_event("model.registered", model_version, user, checkpoint_sha256=sha,
                         near_copy_index_sha256=index_sha, path=str(folder))
    if activate:
        activate_model_version(model_version.pk, user)
        model_version.refresh_from_db()
    return model_version


def activate_model_version(model_version_id: int, user: Any = None) -> ModelVersion:
    """Only a model whose training-data lineage passes the data policy may serve requests."""
    try:
        policies = current_policies()
    except PolicyError as exc:
        raise WorkflowError(f"The data policy cannot be read, so no model can be activated: {exc}") from exc
    with transaction.atomic():
        model_version = ModelVersion.objects.select_for_update().get(pk=model_version_id)
        verdict = policies.data.check_lineage(model_version.lineage)
        if verdict.denied:
            raise WorkflowError("This model cannot be activated: " + " ".join(verdict.reasons()))
        if model_version.is_active:
            return model_version
        ModelVersion.objects.select_for_update().filter(is_active=True).exclude(pk=model_version.pk).update(is_active=False)
        model_version.is_active = True
        model_version.save(update_fields=["is_active"])
        record_event("model.activated", model_version, user, policy_version=verdict.policy_version)
        return model_version


def delete_model_version(model_version_id: int, user: Any = None) -> None:
    """Remove a model version that never served: not the active one (activate another first), not
    one any request names (its manifests and audit events cite it). The deletion is itself an audit
    event carrying what the row held, so the log still says which weights and data it vouched for."""
    from stackgan_django.models import GenerationRequest

    with transaction.atomic():
        model_version = ModelVersion.objects.select_for_update().filter(pk=model_version_id).first()
        if model_version is None:
            raise WorkflowError("This model version no longer exists.")
        if model_version.is_active:
            raise WorkflowError(f"{model_version.name} is the active model version; activate another one "
                                "before deleting it.")
        if GenerationRequest.objects.filter(model_version=model_version).exists():
            raise WorkflowError(f"{model_version.name} generated requests, whose records and manifests cite it; "
                                "it is kept. Deactivated, it serves nothing.")
        record_event("model.deleted", model_version, user, name=model_version.name,
                     checkpoint_sha256=model_version.checkpoint_sha256,
                     near_copy_index_sha256=model_version.near_copy_index_sha256,
                     path=model_version.checkpoint_path, trained=model_version.trained,
                     lineage=model_version.lineage)
        model_version.delete()


def model_lineage(model_version: ModelVersion | None) -> Lineage | None:
    """The parsed lineage of a model version (None when it has none that parses)."""
    return model_version.parsed_lineage if model_version is not None else None
