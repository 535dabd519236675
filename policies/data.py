"""Data policy: which dataset items may be trained on, and what duties their licences carry."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.decisions import Decision, Outcome, Verdict


@dataclass
class DatasetVerdict(Verdict):
    items_total: int = 0
    items_usable: int = 0
    licences: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    obligations: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "items_total": self.items_total, "items_usable": self.items_usable,
                "licences": self.licences, "excluded": self.excluded, "obligations": self.obligations}


class DataPolicy:
    def __init__(self, config: dict[str, Any], version: str):
        self.version = version
        self.allowed_licences = set(config.get("licences", {}).get("allowed", []))
        self.obligations: dict[str, list[str]] = dict(config.get("obligations", {}))
        self.max_items_listed = int(config.get("report", {}).get("max_items_listed", 50))

    def check_items(self, items: Iterable[dict[str, Any]]) -> DatasetVerdict:
        """``items`` are manifest lines (dicts) with a "line" number added."""
        verdict = DatasetVerdict("data", self.version)
        refused: dict[str, list[str]] = {}
        licences: Counter = Counter()
        excluded: Counter = Counter()
        for item in items:
            verdict.items_total += 1
            where = f"line {item.get('line', '?')} ({item.get('image', '?')})"
            licence = item.get("license")
            # The licence is judged first: rights that are not on record refuse the whole set, even
            # for an item that would have been left out anyway.
            if licence not in self.allowed_licences:
                reason = "unknown or not allowed licence " + repr(licence)
                refused.setdefault(reason, []).append(where)
                continue
            if item.get("training_permission") != "allowed":
                excluded["training not allowed by the rights holder"] += 1
                continue
            if "attribution" in self.obligations.get(licence, []) and not str(item.get("attribution", "")).strip():
                refused.setdefault(f"{licence} requires attribution, none recorded", []).append(where)
                continue
            licences[licence] += 1
            verdict.items_usable += 1
        verdict.licences = dict(licences)
        verdict.excluded = dict(excluded)
        verdict.obligations = {lic: self.obligations.get(lic, []) for lic in licences}
        for reason, where in refused.items():
            shown = ", ".join(where[: self.max_items_listed])
            more = f" and {len(where) - self.max_items_listed} more" if len(where) > self.max_items_listed else ""
            verdict.decisions.append(Decision(
                Outcome.DENY, "data.licence" if "licence" in reason else "data.attribution",
                f"{len(where)} item(s) refused: {reason}: {shown}{more}",
                {"reason": reason, "count": len(where), "items": where[: self.max_items_listed]},
            ))
        if excluded:
            verdict.decisions.append(Decision(
                Outcome.ALLOW, "data.excluded",
                f"{sum(excluded.values())} item(s) left out because their rights holders do not allow training",
                {"excluded": dict(excluded)},
            ))
        if verdict.items_usable == 0 and not refused:
            verdict.decisions.append(Decision(Outcome.DENY, "data.empty", "The dataset has no item that may be used."))
        return verdict

    def check_dataset(self, folder: str | Path) -> DatasetVerdict:
        return self.check_items(read_manifest_lines(Path(folder) / "manifest.jsonl"))

    def check_lineage(self, lineage: dict[str, Any]) -> Verdict:
        """A model version is usable only if every dataset it was trained on used allowed licences."""
        verdict = Verdict("data", self.version)
        for dataset in lineage.get("datasets", []):
            bad = sorted(lic for lic in dataset.get("licences", {}) if lic not in self.allowed_licences)
            if bad:
                verdict.decisions.append(Decision(
                    Outcome.DENY, "data.lineage.licence",
                    f"dataset {dataset.get('name')!r} was trained with licences this policy does not allow: {', '.join(bad)}",
                    {"dataset": dataset.get("name"), "licences": bad},
                ))
        return verdict


def read_manifest_lines(path: Path) -> list[dict[str, Any]]:
    items = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                data = {"license": None, "training_permission": None, "image": "(unreadable line)"}
            if not isinstance(data, dict):
                data = {"license": None, "training_permission": None, "image": "(not an object)"}
            items.append({**data, "line": number})
    return items
