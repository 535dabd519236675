"""Data policy: which dataset items may be trained on, and what duties their licences carry."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from lineage import Lineage, LineageError
from lineage.manifest import read_manifest_lines as _manifest_lines
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

    def check_items(self, items: Iterable[dict[str, Any]], folder: str | Path | None = None) -> DatasetVerdict:
        """``items`` are manifest lines (dicts) with a "line" number added. With ``folder`` (the
        dataset's), an item is usable only if its image is a readable image file inside it."""
        verdict = DatasetVerdict("data", self.version)
        refused: dict[str, list[str]] = {}
        licences: Counter = Counter()
        excluded: Counter = Counter()
        unusable: list[str] = []
        for item in items:
            verdict.items_total += 1
            where = f"line {item.get('line', '?')} ({str(item.get('image', '?'))[:200]})"
            licence = item.get("license")
            # The licence is judged first: rights that are not on record refuse the whole set, even
            # for an item that would have been left out anyway. A list or object is no licence id
            # (and not hashable: checked before the set lookup).
            if not isinstance(licence, str) or licence not in self.allowed_licences:
                reason = "unknown or not allowed licence " + repr(licence)[:100]
                refused.setdefault(reason, []).append(where)
                continue
            if item.get("training_permission") != "allowed":
                excluded["training not allowed by the rights holder"] += 1
                continue
            if folder is not None:
                problem, escapes = image_problem(Path(folder), item.get("image"))
                if escapes:  # a manifest naming files outside its folder is not a dataset to trust
                    refused.setdefault("image outside the dataset folder", []).append(where)
                    continue
                if problem:
                    excluded[f"image {problem}"] += 1
                    unusable.append(f"{where}: {problem}")
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
            rule = "data.licence" if "licence" in reason else "data.image" if "image" in reason else "data.attribution"
            verdict.decisions.append(Decision(
                Outcome.DENY, rule,
                f"{len(where)} item(s) refused: {reason}: {shown}{more}",
                {"reason": reason, "count": len(where), "items": where[: self.max_items_listed]},
            ))
        permission = excluded.get("training not allowed by the rights holder", 0)
        if permission:
            verdict.decisions.append(Decision(
                Outcome.ALLOW, "data.excluded",
                f"{permission} item(s) left out because their rights holders do not allow training",
                {"excluded": dict(excluded)},
            ))
        if unusable:
            shown = "; ".join(unusable[: self.max_items_listed])
            more = f" and {len(unusable) - self.max_items_listed} more" if len(unusable) > self.max_items_listed else ""
            verdict.decisions.append(Decision(
                Outcome.ALLOW, "data.image.unusable",
                f"{len(unusable)} item(s) left out because their image cannot be used: {shown}{more}",
                {"count": len(unusable), "items": unusable[: self.max_items_listed]},
            ))
        if verdict.items_usable == 0 and not refused:
            verdict.decisions.append(Decision(Outcome.DENY, "data.empty", "The dataset has no item that may be used."))
        return verdict

    def check_dataset(self, folder: str | Path) -> DatasetVerdict:
        return self.check_items(read_manifest_lines(Path(folder) / "manifest.jsonl"), folder=folder)

    def check_lineage(self, lineage: Lineage | dict[str, Any] | None) -> Verdict:
        """A model version is usable only if its lineage parses, names at least one dataset, and every
        dataset records its licences, all of them allowed. Anything else fails closed."""
        verdict = Verdict("data", self.version)
        try:
            parsed = lineage if isinstance(lineage, Lineage) else Lineage.from_dict(lineage if lineage is not None else {})
        except LineageError as exc:
            verdict.decisions.append(Decision(
                Outcome.DENY, "data.lineage.invalid",
                f"The training-data lineage cannot be read, so what the model was trained on is unknown: {exc}",
                {"error": str(exc)[:500]},
            ))
            return verdict
        if not parsed.datasets:
            verdict.decisions.append(Decision(
                Outcome.DENY, "data.lineage.no_datasets",
                "The lineage names no training dataset, so the rights to what the model learned from are not on record.",
            ))
        for dataset in parsed.datasets:
            if not dataset.licences or not any(dataset.licences.values()):
                verdict.decisions.append(Decision(
                    Outcome.DENY, "data.lineage.no_licences",
                    f"dataset {dataset.name!r} records no licences, so its rights are not on record",
                    {"dataset": dataset.name},
                ))
                continue
            bad = sorted(lic for lic in dataset.licences if lic not in self.allowed_licences)
            if bad:
                verdict.decisions.append(Decision(
                    Outcome.DENY, "data.lineage.licence",
                    f"dataset {dataset.name!r} was trained with licences this policy does not allow: {', '.join(bad)}",
                    {"dataset": dataset.name, "licences": bad},
                ))
        return verdict


def image_problem(folder: Path, image: Any) -> tuple[str | None, bool]:
    """(what is wrong with a manifest item's image, whether it points outside ``folder``), or
    (None, False) for a regular file inside the folder, after symlinks, whose header is an image's."""
    if not isinstance(image, str) or not image.strip() or "\x00" in image:
        return f"path {image!r:.100} is not a file name", False
    root = folder.resolve()
    try:
        path = (folder / image).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a name the OS refuses
        return f"path cannot be resolved ({exc})", False
    if os.path.isabs(image) or not path.is_relative_to(root):
        return "is outside the dataset folder", True
    if not path.is_file():
        return "is missing or not a regular file", False
    try:
        with Image.open(path) as opened:  # the header only: nothing is decoded
            opened.size  # noqa: B018
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        return f"is not a readable image ({type(exc).__name__})", False
    return None, False


def read_manifest_lines(path: Path) -> list[dict[str, Any]]:
    """Every line as a dict with its "line" number; an unreadable line becomes an item with no
    licence, so the licence rule refuses it by line number."""
    items = []
    for line in _manifest_lines(path):
        data = line.data if line.data is not None else {"license": None, "training_permission": None,
                                                          "image": f"(unreadable line: {line.error})"}
        items.append({**data, "line": line.number})
    return items
