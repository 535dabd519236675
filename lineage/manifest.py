"""Reading a dataset's ``manifest.jsonl`` line by line, shared by the trainer's strict reader and the
data policy's item-by-item judgement: one place decides what a line number is and what a line
that is not a JSON object becomes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.jsonl"


@dataclass(frozen=True)
class ManifestLine:
    """One non-blank line: ``data`` is the decoded object, or None with ``error`` saying why not."""

    number: int
    data: dict[str, Any] | None
    error: str = ""


def read_manifest_lines(path: str | os.PathLike) -> Iterator[ManifestLine]:
    """Every non-blank line of a manifest file (or of ``folder/manifest.jsonl``), numbered from 1."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield ManifestLine(number, None, "not valid UTF-8")
                continue
            except json.JSONDecodeError as exc:
                yield ManifestLine(number, None, f"not valid JSON ({exc.msg})")
                continue
            except RecursionError:
                yield ManifestLine(number, None, "nested too deeply")
                continue
            if not isinstance(data, dict):
                yield ManifestLine(number, None, "not a JSON object")
                continue
            yield ManifestLine(number, data)
