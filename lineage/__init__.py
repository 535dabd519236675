"""The one schema of ``lineage.json``: which datasets (with their licences) and which training phases
made a checkpoint. Standard library only, so the trainer (torch), the policy engine (no torch) and
the Django app all read and write it through the same classes.

Readers never index raw dicts: ``Lineage.from_dict`` rejects missing and unknown keys with a message
naming the key, so a renamed field (``licenses`` for ``licences``) fails loudly instead of silently
passing a compliance gate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineage.manifest import ManifestLine, read_manifest_lines

__all__ = [
    "FORMAT_VERSION", "LINEAGE_FILE", "DatasetRecord", "Lineage", "LineageError", "ManifestLine", "SkippedRecord", "TrainingPhase",
    "read_lineage", "read_manifest_lines", "write_lineage",
]

FORMAT_VERSION = 1
LINEAGE_FILE = "lineage.json"


class LineageError(ValueError):
    """A lineage that does not follow the schema; the message names the offending key."""


def _check_keys(data: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise LineageError(f"{where}: expected an object, got {type(data).__name__}")
    missing = [key for key in required if key not in data]
    if missing:
        raise LineageError(f"{where}: missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unknown = sorted(str(key) for key in data if key not in required and key not in optional)
    if unknown:
        raise LineageError(f"{where}: unknown key {unknown[0]!r}; expected {', '.join(required + optional)}")
    return data


def _text(value: Any, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise LineageError(f"{where}: expected {'text' if empty else 'non-empty text'}, got {value!r}"[:300])
    return value


def _optional_text(value: Any, where: str) -> str | None:
    return None if value is None else _text(value, where, empty=True)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LineageError(f"{where}: expected a whole number >= 0, got {value!r}"[:300])
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise LineageError(f"{where}: expected a number >= 0, got {value!r}"[:300])
    return float(value)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise LineageError(f"{where}: expected a list, got {type(value).__name__}")
    return list(value)


@dataclass(frozen=True)
class SkippedRecord:
    """An item of a dataset the trainer left out, and why."""

    line: int
    image: str
    reason: str

    @classmethod
    def from_dict(cls, data: Any, where: str = "skipped item") -> SkippedRecord:
        data = _check_keys(data, where, ("line", "image", "reason"))
        return cls(_count(data["line"], f"{where}.line"), _text(data["image"], f"{where}.image", empty=True),
                   _text(data["reason"], f"{where}.reason"))

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "image": self.image, "reason": self.reason}


@dataclass(frozen=True)
class DatasetRecord:
    """One dataset a checkpoint was trained on: its manifest's hash, how many items were used and
    under which licences (licence id -> item count), and the attribution lines owed."""

    name: str
    manifest_sha256: str
    items_used: int
    licences: Mapping[str, int]
    attributions: tuple[str, ...] = ()
    items_skipped: int = 0
    skipped: tuple[SkippedRecord, ...] = ()

    REQUIRED = ("name", "manifest_sha256", "items_used", "licences", "attributions")
    OPTIONAL = ("items_skipped", "skipped")

    @classmethod
    def from_dict(cls, data: Any, where: str = "dataset") -> DatasetRecord:
        data = _check_keys(data, where, cls.REQUIRED, cls.OPTIONAL)
        name = _text(data["name"], f"{where}.name")
        where = f"dataset {name!r}"
        digest = _text(data["manifest_sha256"], f"{where}.manifest_sha256")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise LineageError(f"{where}.manifest_sha256: expected 64 lower-case hex digits, got {digest!r}"[:300])
        licences_raw = data["licences"]
        if not isinstance(licences_raw, Mapping):
            raise LineageError(f"{where}.licences: expected an object of licence id -> item count")
        licences = {_text(k, f"{where}.licences key"): _count(v, f"{where}.licences[{k!r}]") for k, v in licences_raw.items()}
        attributions = tuple(_text(a, f"{where}.attributions[{i}]") for i, a in enumerate(_list(data["attributions"], f"{where}.attributions")))
        skipped = tuple(SkippedRecord.from_dict(s, f"{where}.skipped[{i}]")
                        for i, s in enumerate(_list(data.get("skipped", []), f"{where}.skipped")))
        return cls(name, digest, _count(data["items_used"], f"{where}.items_used"), licences, attributions,
                   _count(data.get("items_skipped", len(skipped)), f"{where}.items_skipped"), skipped)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "manifest_sha256": self.manifest_sha256, "items_used": self.items_used,
                "licences": dict(self.licences), "attributions": list(self.attributions),
                "items_skipped": self.items_skipped, "skipped": [s.to_dict() for s in self.skipped]}


@dataclass(frozen=True)
class TrainingPhase:
    """One training run that shaped the weights. ``options`` holds the trainer's settings for the run
    (losses, augmentation, learning rates): descriptive, so they may change with the trainer."""

    run: str
    dataset: str
    sizes: tuple[int, ...]
    steps: int
    batch_size: int = 0
    epochs: float = 0.0
    device: str = ""
    init_from: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    REQUIRED = ("run", "dataset", "sizes", "steps")
    OPTIONAL = ("batch_size", "epochs", "device", "init_from", "started_at", "updated_at", "options")

    @classmethod
    def from_dict(cls, data: Any, where: str = "phase") -> TrainingPhase:
        data = _check_keys(data, where, cls.REQUIRED, cls.OPTIONAL)
        options = data.get("options", {})
        if not isinstance(options, Mapping):
            raise LineageError(f"{where}.options: expected an object")
        return cls(
            run=_text(data["run"], f"{where}.run"), dataset=_text(data["dataset"], f"{where}.dataset"),
            sizes=tuple(_count(s, f"{where}.sizes") for s in _list(data["sizes"], f"{where}.sizes")),
            steps=_count(data["steps"], f"{where}.steps"), batch_size=_count(data.get("batch_size", 0), f"{where}.batch_size"),
            epochs=_number(data.get("epochs", 0.0), f"{where}.epochs"), device=_text(data.get("device", ""), f"{where}.device", empty=True),
            init_from=_optional_text(data.get("init_from"), f"{where}.init_from"),
            started_at=_optional_text(data.get("started_at"), f"{where}.started_at"),
            updated_at=_optional_text(data.get("updated_at"), f"{where}.updated_at"),
            options=dict(options),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "dataset": self.dataset, "sizes": list(self.sizes), "steps": self.steps,
                "batch_size": self.batch_size, "epochs": self.epochs, "device": self.device, "init_from": self.init_from,
                "started_at": self.started_at, "updated_at": self.updated_at, "options": dict(self.options)}


# The keys of a phase in the first, unversioned lineage files; anything else there was an option.
_LEGACY_PHASE_KEYS = set(TrainingPhase.REQUIRED + TrainingPhase.OPTIONAL)


@dataclass(frozen=True)
class Lineage:
    """Everything a checkpoint was made from: datasets (earliest first) and training phases in order."""

    datasets: tuple[DatasetRecord, ...] = ()
    phases: tuple[TrainingPhase, ...] = ()
    note: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> Lineage:
        """Parse and validate; raises LineageError naming the first bad key.

        Files written before the schema was versioned (``{"datasets": [...], "training": {..., "phases":
        [...]}}``) are read through an explicit upgrade; any other shape must be the current one exactly.
        """
        if isinstance(data, Mapping) and "format_version" not in data and "training" in data:
            data = _upgrade_unversioned(data)
        data = _check_keys(data, "lineage", ("format_version", "datasets", "phases"), ("note",))
        if data["format_version"] != FORMAT_VERSION:
            raise LineageError(f"lineage.format_version: this version reads {FORMAT_VERSION}, got {data['format_version']!r}")
        datasets = tuple(DatasetRecord.from_dict(d, f"lineage.datasets[{i}]") for i, d in enumerate(_list(data["datasets"], "lineage.datasets")))
        phases = tuple(TrainingPhase.from_dict(p, f"lineage.phases[{i}]") for i, p in enumerate(_list(data["phases"], "lineage.phases")))
        return cls(datasets, phases, _text(data.get("note", ""), "lineage.note", empty=True))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format_version": FORMAT_VERSION, "datasets": [d.to_dict() for d in self.datasets],
                                "phases": [p.to_dict() for p in self.phases]}
        if self.note:
            data["note"] = self.note
        return data

    @property
    def trained(self) -> bool:
        return bool(self.datasets) and any(p.steps > 0 for p in self.phases)

    @property
    def latest_phase(self) -> TrainingPhase | None:
        return self.phases[-1] if self.phases else None

    def attributions(self) -> list[str]:
        """Credit lines owed to the training data's rights holders, each once, in dataset order."""
        seen: dict[str, None] = {}
        for dataset in self.datasets:
            for line in dataset.attributions:
                seen.setdefault(line, None)
        return list(seen)

    def extended(self, dataset: DatasetRecord, phase: TrainingPhase) -> Lineage:
        """This lineage with one more training phase on ``dataset``; a dataset already listed (same
        manifest hash) is replaced by its newer record rather than listed twice."""
        kept = tuple(d for d in self.datasets if d.manifest_sha256 != dataset.manifest_sha256)
        earlier = tuple(p for p in self.phases if p.run != phase.run or p.started_at != phase.started_at)
        return Lineage(kept + (dataset,), earlier + (phase,), self.note)


def _upgrade_unversioned(data: Mapping[str, Any]) -> dict[str, Any]:
    training = data.get("training") or {}
    if not isinstance(training, Mapping):
        raise LineageError("lineage.training: expected an object")
    unknown = sorted(k for k in data if k not in ("datasets", "training"))
    if unknown:
        raise LineageError(f"lineage: unknown key {unknown[0]!r}")
    raw_phases = training.get("phases") or ([training] if training.get("run") else [])
    phases = []
    for raw in _list(raw_phases, "lineage.training.phases"):
        if not isinstance(raw, Mapping):
            raise LineageError("lineage.training.phases: expected objects")
        phase = {k: v for k, v in raw.items() if k in _LEGACY_PHASE_KEYS and k != "options"}
        options = {k: v for k, v in raw.items() if k not in _LEGACY_PHASE_KEYS and k != "phases"}
        phases.append({**phase, "options": options})
    upgraded: dict[str, Any] = {"format_version": FORMAT_VERSION, "datasets": data.get("datasets", []), "phases": phases}
    if not phases and training.get("note"):
        upgraded["note"] = str(training["note"])
    return upgraded


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_strict(text: str) -> Any:
    """``json.loads`` as the JSON standard reads it: NaN and Infinity are refused (no database keeps
    them in a JSON column: SQLite's check and PostgreSQL's jsonb both reject the row), and nesting
    deep enough to exhaust the parser is a ValueError, not a RecursionError."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def read_lineage(folder: str | os.PathLike) -> Lineage:
    """The lineage of a checkpoint folder; a missing or unreadable file is a LineageError."""
    path = Path(folder) / LINEAGE_FILE
    try:
        data = loads_strict(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LineageError(f"{path} is missing: a checkpoint without a lineage cannot show what it was trained on") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LineageError(f"{path} is not readable JSON: {exc}") from exc
    return Lineage.from_dict(data)


def write_lineage(folder: str | os.PathLike, lineage: Lineage) -> Path:
    """Write atomically (temporary file, then rename)."""
    path = Path(folder) / LINEAGE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(lineage.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
