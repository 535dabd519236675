"""Load and validate the policy files of a folder (usage.toml, data.toml, output.toml).

Every error names the file, the key and the problem. The policy version is the SHA-256 of the
files' names and content, so any edit gives a new version that every decision records.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policies.data import DataPolicy
from policies.embedding import ENCODERS, Embedder
from policies.evaluation import UNCATEGORISED, LabelledSetError, read_labelled
from policies.gazetteer import gazetteer_for, lists_digest, lists_folder_of
from policies.language import LanguageCheckUnavailable
from policies.output import ImageCheck, OutputPolicy
from policies.semantic import SemanticLayer, TrainingCaption
from policies.usage import UsagePolicy

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
FILES = ("usage.toml", "data.toml", "output.toml")
# Optional: a folder without it has no semantic layer (the word rules alone), as before it existed.
OPTIONAL_FILES = ("semantic.toml",)
OUTCOMES = ("allow", "review", "deny")


class PolicyError(ValueError):
    """A policy file is missing or invalid. Callers must fail closed."""


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


FIELD_CHECKS = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number >= 0"),
    "number": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "outcome": (lambda v: v in OUTCOMES, "one of allow, review, deny"),
    "str_list": (_is_str_list, "a list of non-empty strings"),
    "probability": (lambda v: _num(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "int_table": (lambda v: isinstance(v, dict) and all(isinstance(x, int) for x in v.values()), "a table of numbers"),
    "probability_table": (lambda v: isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                and 0 <= x <= 1 for x in v.values()),
                          "a table of numbers from 0 to 1"),
    "list_table": (lambda v: isinstance(v, dict) and all(_is_str_list(x) or x == [] for x in v.values()),
                   "a table of string lists"),
}

# file -> section -> {key: (type, required)}; a section named "*" is a table of named sub-tables.
SCHEMA: dict[str, dict[str, Any]] = {
    "usage.toml": {
        "limits": {"max_chars": ("int", False), "min_letters": ("int", False), "max_words": ("int", False)},
        "blocked": {"*": {"terms": ("str_list", True), "outcome": ("outcome", False), "message": ("str", False),
                          "suffixes": ("bool", False), "disguised_as": ("str", False),
                          "harmless_phrases": ("str_list", False), "patterns": ("str_list", False)}},
        "protected": {"*": {"names": ("str_list", True), "outcome": ("outcome", False), "message": ("str", False)}},
        "personal_data": {"outcome": ("outcome", False), "kinds": ("str_list", False)},
        "purposes": {"allowed": ("str_list", False)},
        "quotas": {"per_user_per_day": ("int", False), "per_group_per_day": ("int_table", False)},
        "language": {"readable": ("str_list", False), "outcome": ("outcome", False),
                     "min_confidence": ("probability", False), "max_readable_share": ("probability", False),
                     "min_letters": ("int", False), "message": ("str", False)},
    },
    "data.toml": {
        "licences": {"allowed": ("str_list", True)},
        "obligations": {"__table__": ("list_table", False)},
        "report": {"max_items_listed": ("int", False)},
    },
    "output.toml": {
        "degenerate": {"min_std": ("number", False), "min_detail": ("number", False), "outcome": ("outcome", False)},
        "near_copy": {"max_hamming_distance": ("int", False), "min_similarity": ("probability", False),
                      "min_detail": ("probability", False), "min_luminance_similarity": ("probability", False),
                      "min_luminance_detail": ("probability", False), "reframe_from": ("probability", False),
                      "recolour_from": ("probability", False), "min_local_inliers": ("int", False),
                      "min_local_visible": ("probability", False), "min_local_agreement": ("probability", False),
                      "outcome": ("outcome", False)},
    },
    "semantic.toml": {
        "model": {"ridge": ("number", False), "other_category_weight": ("number", False), "nearest_k": ("int", False)},
        "encoder": {"folder": ("str", False), "precision": ("str", False)},
        "categories": {"*": {"message": ("str", False), "review_at": ("probability", False),
                             "deny_at": ("probability", False), "covers": ("str_list", True),
                             "does_not_cover": ("str_list", False)}},
        "harmless": {"examples": ("str_list", False)},
        "training": {"labelled": ("str", False)},
        "word_review": {"clear_below": ("probability", False), "sections": ("list_table", False),
                        "clear_below_by_section": ("probability_table", False)},
        "reported_words": {"sections": ("list_table", False)},
        "instructions": {"category": ("str", True), "review_at": ("probability", False), "deny_at": ("probability", False),
                         "harmful_acts": ("str_list", False), "harmless_acts": ("str_list", False)},
    },
}


def _check_table(file: str, path: str, table: Any, spec: dict[str, Any]) -> list[str]:
    if not isinstance(table, dict):
        return [f"{file}: [{path}] must be a table"]
    if "__table__" in spec:
        kind = spec["__table__"][0]
        check, wanted = FIELD_CHECKS[kind]
        return [] if check(table) else [f"{file}: [{path}] must be {wanted}"]
    errors = []
    for key in table:
        if key not in spec:
            errors.append(f"{file}: [{path}] has unknown key {key!r} (known: {', '.join(sorted(spec))})")
    for key, (kind, required) in spec.items():
        if key not in table:
            if required:
                errors.append(f"{file}: [{path}] is missing the required key {key!r}")
            continue
        check, wanted = FIELD_CHECKS[kind]
        if not check(table[key]):
            errors.append(f"{file}: [{path}] key {key!r} must be {wanted}, got {table[key]!r}")
    return errors


REQUIRED_SECTIONS = {"data.toml": ("licences",)}
MIN_EXAMPLES = 10


def validate_semantic(data: dict[str, Any]) -> list[str]:
    """What the schema cannot say: a category needs a threshold and enough examples to learn from."""
    errors = []
    precision = data.get("encoder", {}).get("precision", "float32") if isinstance(data.get("encoder"), dict) else "float32"
    if precision not in ENCODERS:
        errors.append(f"semantic.toml: [encoder] precision must be one of {', '.join(ENCODERS)}, got {precision!r}")
    categories = data.get("categories", {})
    if not isinstance(categories, dict):
        return errors
    for name, spec in categories.items():
        if not isinstance(spec, dict):
            continue
        if "review_at" not in spec and "deny_at" not in spec:
            errors.append(f"semantic.toml: [categories.{name}] needs review_at, deny_at or both")
        review, deny = spec.get("review_at"), spec.get("deny_at")
        if _num(review) and _num(deny) and review > deny:
            errors.append(f"semantic.toml: [categories.{name}] review_at ({review}) is above deny_at ({deny})")
        if isinstance(spec.get("covers"), list) and len(spec["covers"]) < MIN_EXAMPLES:
            errors.append(f"semantic.toml: [categories.{name}] has {len(spec['covers'])} covered examples; "
                          f"at least {MIN_EXAMPLES} are needed to learn from")
    if categories and isinstance(data.get("harmless", {}), dict):
        harmless = len(data.get("harmless", {}).get("examples", []) or []) + sum(
            len(spec.get("does_not_cover", []) or []) for spec in categories.values() if isinstance(spec, dict))
        if harmless < MIN_EXAMPLES:
            errors.append(f"semantic.toml: {harmless} harmless examples ([harmless] examples and does_not_cover); "
                          f"at least {MIN_EXAMPLES} are needed to learn what is allowed")
    return errors


def validate(file: str, data: dict[str, Any]) -> list[str]:
    schema = SCHEMA[file]
    errors = [f"{file}: unknown section [{k}] (known: {', '.join(sorted(schema))})" for k in data if k not in schema]
    errors += [f"{file}: the section [{k}] is required" for k in REQUIRED_SECTIONS.get(file, ()) if k not in data]
    if file == "semantic.toml":
        errors += validate_semantic(data)
    for section, spec in schema.items():
        if section not in data:
            continue
        if "*" in spec:
            if not isinstance(data[section], dict):
                errors.append(f"{file}: [{section}] must be a table of named tables")
                continue
            for name, table in data[section].items():
                errors += _check_table(file, f"{section}.{name}", table, spec["*"])
        else:
            errors += _check_table(file, section, data[section], spec)
    return errors


def _read_training(folder: Path, name: str) -> tuple[bytes, list[TrainingCaption]]:
    """The labelled captions that semantic.toml's [training] names: a CSV inside the policy folder
    (so a folder is copied, versioned and deployed whole), columns caption, expected, category."""
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise PolicyError(f"semantic.toml: [training] labelled = {name!r} must be a file inside the policy folder")
    try:
        raw = path.read_bytes()
        rows = read_labelled(raw.decode("utf-8"))
    except OSError as exc:
        raise PolicyError(f"semantic.toml: [training] labelled = {name!r} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"semantic.toml: [training] labelled = {name!r} is not valid UTF-8") from None
    except LabelledSetError as exc:
        raise PolicyError(f"semantic.toml: [training] labelled = {name!r}: {exc}") from None
    return raw, [TrainingCaption(row.caption, "" if row.category == UNCATEGORISED else row.category, row.harmful)
                 for row in rows]


@dataclass
class PolicySet:
    folder: Path
    version: str
    usage: UsagePolicy
    data: DataPolicy
    output: OutputPolicy


def load_policies(folder: str | Path | None = None, extra_image_checks: list[ImageCheck] | None = None,
                  embedder: Embedder | None = None) -> PolicySet:
    """Read, validate and build the policies of a folder; raises PolicyError naming every problem.

    ``embedder`` replaces the packaged sentence encoder of the semantic layer (captions in, unit
    vectors out); by default all-MiniLM-L6-v2 is loaded on the first caption checked, once per process.
    """
    folder = Path(folder) if folder else DEFAULT_DIR
    if not folder.is_dir():
        raise PolicyError(f"policy folder {folder} does not exist")
    digest = hashlib.sha256()
    parsed: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for name in FILES + OPTIONAL_FILES:
        path = folder / name
        if not path.is_file():
            if name not in OPTIONAL_FILES:
                errors.append(f"{name}: missing from {folder}")
            continue
        raw = path.read_bytes()
        digest.update(name.encode() + b"\0" + raw + b"\0")
        try:
            parsed[name] = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            errors.append(f"{name}: not valid UTF-8")
            continue
        except tomllib.TOMLDecodeError as exc:
            errors.append(f"{name}: not valid TOML: {exc}")
            continue
        errors += validate(name, parsed[name])
    if errors:
        raise PolicyError("invalid policy files:\n  " + "\n  ".join(errors))
    training: list[TrainingCaption] = []
    labelled = parsed.get("semantic.toml", {}).get("training", {}).get("labelled")
    if labelled:
        try:
            raw, training = _read_training(folder, labelled)
            digest.update(labelled.encode() + b"\0" + raw + b"\0")
        except PolicyError as exc:
            raise PolicyError(f"invalid policy files:\n  {exc}") from None
    # The name lists of [protected] (people, characters, brands, and the word lists that keep ordinary
    # words from reading as names) are part of the policy: an edit to one is a new version.
    try:
        lists_folder = lists_folder_of(folder)
        lists_version, hashed = lists_digest(lists_folder)
        digest.update(hashed)
    except (ValueError, OSError) as exc:
        raise PolicyError(f"invalid policy files:\n  name lists: {exc}") from None
    version = digest.hexdigest()
    try:
        name_lists = gazetteer_for(lists_folder, lists_version)
    except (ValueError, KeyError, UnicodeDecodeError) as exc:
        raise PolicyError(f"invalid policy files:\n  name lists in {lists_folder}: {exc}") from None
    try:
        return PolicySet(
            folder=folder,
            version=version,
            usage=UsagePolicy(parsed["usage.toml"], version,
                              SemanticLayer(parsed["semantic.toml"], embedder, training) if "semantic.toml" in parsed else None,
                              name_lists),
            data=DataPolicy(parsed["data.toml"], version),
            output=OutputPolicy(parsed["output.toml"], version, extra_image_checks),
        )
    except (ValueError, KeyError, TypeError) as exc:  # defensive: schema passed but a value is unusable
        raise PolicyError(f"invalid policy files in {folder}: {exc}") from exc
    except LanguageCheckUnavailable as exc:  # fails closed, as a broken file does
        raise PolicyError(f"the policy files in {folder} cannot be enforced: {exc}") from exc
