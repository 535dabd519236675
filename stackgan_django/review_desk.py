"""What a reviewer needs on one page, turned from records into readable rows: the provenance panel
(state badge and meaning, actions, assertions), policy decisions with their evidence, the training
data of the model, the audit trail of the asset, and its place in the review queue."""

from __future__ import annotations

from typing import Any

from django.db.models import Case, IntegerField, QuerySet, Value, When

from stackgan_django.disclosure import decision_category, requester_message
from stackgan_django.models import Asset, AuditEvent, PolicyDecision

# The meaning of each C2PA validation state, in the words a compliance officer would use.
PROVENANCE_BADGES: dict[str, tuple[str, str]] = {
    "Trusted": ("trusted", "The file is unaltered since it was signed, and the signer is our own signing certificate: "
                           "this is the file we made."),
    "Valid": ("valid", "The file is unaltered since it was signed, but the signer is not one we trust: it was signed "
                       "elsewhere or with an old key. Do not rely on its claims."),
    "Invalid": ("invalid", "The file or its provenance was changed after signing, or the signature is broken: do not "
                           "publish it."),
    "No manifest": ("none", "The file carries no provenance (it may have been re-encoded or screenshotted)."),
    "Not an image": ("none", "The file is not an image we can read."),
}
NO_PROVENANCE = ("none", "No provenance has been recorded for this file.")

ACTION_NAMES = {
    "c2pa.created": "Created",
    "c2pa.opened": "Opened (the generated file, as parent)",
    "c2pa.published": "Published (approved by a reviewer)",
    "c2pa.unknown": "Reviewed",
}
ASSERTION_NAMES = {
    "org.stackgan-django.generation": "Generation",
    "org.stackgan-django.training-data": "Training data",
    "org.stackgan-django.review": "Review",
    "cawg.training-mining": "Training and data mining wish",
}
SOURCE_TYPES = {"trainedAlgorithmicMedia": "AI-generated (trained algorithmic media)"}


def provenance_badge(state: str | None) -> dict[str, str]:
    css, meaning = PROVENANCE_BADGES.get(state or "", NO_PROVENANCE)
    return {"state": state or "none", "css": css, "meaning": meaning}


def _readable_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return "; ".join(", ".join(f"{k}: {_readable_value(v)}" for k, v in item.items()) for item in value)
        return ", ".join(_readable_value(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_readable_value(v)}" for k, v in value.items()) or "-"
    if isinstance(value, str) and value.startswith("http") and "digitalsourcetype/" in value:
        code = value.rsplit("/", 1)[-1]
        return SOURCE_TYPES.get(code, code)
    return "-" if value is None or value == "" else str(value)


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested assertion data as (field, value) rows: one level of nesting becomes "a / b"."""
    if not isinstance(data, dict):
        return [(prefix or "value", _readable_value(data))]
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix} / {key}" if prefix else str(key)
        if isinstance(value, dict) and value and not prefix:
            rows.extend(_flatten(value, name))
        else:
            rows.append((name.replace("_", " "), _readable_value(value)))
    return rows


def _action_rows(data: Any) -> list[dict[str, str]]:
    rows = []
    for action in (data or {}).get("actions", []) if isinstance(data, dict) else []:
        agent = action.get("softwareAgent")
        if isinstance(agent, dict):
            agent = " ".join(str(agent.get(k, "")) for k in ("name", "version")).strip()
        parameters = action.get("parameters") or {}
        rows.append({
            "action": ACTION_NAMES.get(action.get("action", ""), action.get("action", "")),
            "code": action.get("action", ""),
            "when": action.get("when", ""),
            "agent": agent or "",
            "source": _readable_value(action["digitalSourceType"]) if action.get("digitalSourceType") else "",
            "detail": parameters.get("description", ""),
        })
    return rows


def _dataset_names(data: Any) -> list[str]:
    """The dataset names a training-data assertion declares. Any file uploaded to "Check a file"
    may carry an assertion under our label, signed by anyone, with any JSON in it: what is not
    shaped like ours is shown as text, never trusted to be a list of objects."""
    datasets = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(datasets, list):
        return [] if datasets in (None, "", []) else [_readable_value(datasets)]
    return [str(d.get("name", "?")) if isinstance(d, dict) else _readable_value(d) for d in datasets]


def provenance_panel(report: dict[str, Any] | None) -> dict[str, Any]:
    """The verification report stored on the asset as rows a person can read."""
    report = report or {}
    manifests = []
    for manifest in report.get("manifests", []):
        assertions = manifest.get("assertions", {}) or {}
        actions: list[dict[str, str]] = []
        others = []
        for label, data in assertions.items():
            if label.startswith("c2pa.actions"):
                actions.extend(_action_rows(data))
            elif label == "org.stackgan-django.training-data":
                # The table under "Training data" shows this from the model's lineage schema.
                others.append({"label": ASSERTION_NAMES[label], "code": label,
                               "rows": [("datasets", ", ".join(_dataset_names(data)) or "none declared")]})
            else:
                others.append({"label": ASSERTION_NAMES.get(label, label), "code": label, "rows": _flatten(data)})
        manifests.append({"title": manifest.get("title") or manifest.get("label"), "signed_by": manifest.get("signed_by"),
                          "issuer": manifest.get("issuer"), "signed_at": manifest.get("signed_at"),
                          "claim_generator": ", ".join(manifest.get("claim_generator") or []),
                          "actions": actions, "assertions": others,
                          "ingredients": manifest.get("ingredients", [])})
    watermark = report.get("watermark") or {}
    return {"badge": provenance_badge(report.get("state")), "message": report.get("message", ""),
            "failures": report.get("failures", []), "manifests": manifests, "watermark": watermark}


def decision_rows(decisions: QuerySet[PolicyDecision] | list[PolicyDecision], *,
                  full_evidence: bool) -> list[dict[str, Any]]:
    """Decisions as table rows. ``full_evidence`` (compliance staff, disclosure.sees_policy_evidence)
    shows every piece of evidence; otherwise the row holds what a requester may learn: the rule, the
    category and the reason, with no score, threshold or example (stackgan_django.disclosure)."""
    rows = []
    for d in decisions:
        if full_evidence:
            message = d.message
            evidence = [(str(k).replace("_", " "), _readable_value(v)) for k, v in (d.evidence or {}).items()]
        else:
            message = requester_message(d.message, d.evidence)
            category = decision_category(d.evidence)
            evidence = [("category", category)] if category else []
        rows.append({"stage": d.get_stage_display(), "outcome": d.outcome, "outcome_label": d.get_outcome_display(),
                     "rule": d.rule_id, "message": message, "evidence": evidence})
    return rows


def training_data_rows(model_version: Any) -> tuple[list[dict[str, Any]], str]:
    """The datasets of the model's lineage (through the lineage schema), or why there are none."""
    if model_version is None:
        return [], "No model version is recorded for this request."
    lineage = model_version.parsed_lineage
    if lineage is None:
        return [], "This model version's lineage is missing or does not parse: its training data is unknown."
    rows = []
    for dataset in lineage.datasets:
        rows.append({"name": dataset.name, "items": dataset.items_used, "skipped": dataset.items_skipped,
                     "licences": [f"{licence} ({count:,} items)" for licence, count in sorted(dataset.licences.items())],
                     "attributions": list(dataset.attributions), "manifest_sha256": dataset.manifest_sha256})
    return rows, "" if rows else "The lineage names no dataset."


def desk_order(queryset: QuerySet[Asset]) -> QuerySet[Asset]:
    """Pending first, flagged first, oldest first: the order a reviewer works through."""
    return queryset.annotate(
        pending_rank=Case(When(state=Asset.State.PENDING_REVIEW, then=Value(0)), default=Value(1),
                          output_field=IntegerField()),
    ).order_by("pending_rank", "-flagged", "created_at", "index", "pk")


def queue_neighbours(asset: Asset, pending: QuerySet[Asset]) -> tuple[int | None, int | None, int, int | None]:
    """(previous, next, pending count, position) in the review queue of pending assets."""
    ids = list(desk_order(pending.filter(state=Asset.State.PENDING_REVIEW)).values_list("pk", flat=True))
    if asset.pk not in ids:
        return None, (ids[0] if ids else None), len(ids), None
    at = ids.index(asset.pk)
    return (ids[at - 1] if at > 0 else None), (ids[at + 1] if at + 1 < len(ids) else None), len(ids), at + 1


def audit_trail(asset: Asset) -> QuerySet[AuditEvent]:
    """The events of this asset and of the request that made it, oldest first."""
    from django.db.models import Q

    return AuditEvent.objects.filter(
        Q(object_type="asset", object_id=str(asset.pk)) | Q(object_type="generationrequest", object_id=str(asset.request_id))
    ).order_by("sequence")
