"""The trainer's command line: ``python -m generator.train`` and ``stackgan-train``.

The parser is built from the fields of ``TrainingOptions`` and ``StackGANConfig`` (their defaults and
the help text in their field metadata), so a default is written in one place only. Architecture flags
default to the ``--init-from`` checkpoint's architecture when fine-tuning, else to StackGANConfig's.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import typing
from pathlib import Path
from types import UnionType
from typing import Any

from generator import checkpoint as ckpt
from generator.bundle import BundleError
from generator.config import StackGANConfig
from generator.data import ManifestError
from generator.models import count_parameters
from generator.registry import VARIANTS, get_variant
from generator.train import Trainer, TrainingOptions
from lineage import LineageError

GROUPS = ("data and output", "architecture (defaults to --init-from's when fine-tuning)", "optimisation",
          "logging and checkpoints")


def _plain_type(annotation: Any) -> Any:
    """``int | None`` -> int; other annotations unchanged."""
    if isinstance(annotation, UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else str
    return annotation


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _add_field(group: argparse._ArgumentGroup, field: dataclasses.Field, kind: Any, default: Any,
               show_default: bool = True) -> None:
    meta = field.metadata
    help_text = meta["help"]
    extra = dict(meta.get("argparse") or {})
    if kind is bool:
        # A flag turns the default around: --quiet for progress=True, --unconditional for conditional=True.
        action = "store_false" if field.default is True else "store_true"
        group.add_argument(_flag(field), dest=field.name, action=action, default=default, help=help_text)
        return
    if extra.get("action") == "append":
        group.add_argument(_flag(field), dest=field.name, default=None, help=help_text, **extra)
        return
    if show_default and default is not None and "required" not in extra:
        help_text += f" [{default if not isinstance(default, tuple) else ' '.join(map(str, default))}]"
    extra.setdefault("type", kind if kind in (int, float, str, Path) else str)
    group.add_argument(_flag(field), dest=field.name, default=default, help=help_text, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generator.train",
        description="Train StackGAN-v1 or StackGAN-v2 on a dataset folder with manifest.jsonl (or a training "
        "bundle from `python -m generator.bundle pack`). Run the same command again to resume from the last "
        "checkpoint in --output.",
    )
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    option_hints = typing.get_type_hints(TrainingOptions)
    for field in dataclasses.fields(TrainingOptions):
        if field.metadata.get("cli", True) is False:
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = None
        _add_field(groups[field.metadata["group"]], field, _plain_type(option_hints[field.name]), default)
    architecture = groups[GROUPS[1]]
    config_hints = typing.get_type_hints(StackGANConfig)
    for field in dataclasses.fields(StackGANConfig):
        kind = _plain_type(config_hints[field.name])
        # None = not given: the --init-from checkpoint's value, else StackGANConfig's default.
        fallback = f"{field.default}" if kind is not bool else None
        help_suffix = f" [{fallback}]" if fallback is not None else ""
        if field.name == "variant":
            architecture.add_argument("--variant", choices=tuple(VARIANTS), default=None,
                                      help=field.metadata["help"] + help_suffix)
            continue
        if kind is bool:
            architecture.add_argument(_flag(field), dest=field.name, action="store_true", default=None,
                                      help=field.metadata["help"])
            continue
        architecture.add_argument(_flag(field), dest=field.name, type=kind, default=None,
                                  help=field.metadata["help"] + help_suffix)
    return parser


def options_from_args(args: argparse.Namespace) -> TrainingOptions:
    base = ckpt.read_config(args.init_from)[0] if args.init_from else StackGANConfig()
    overrides: dict[str, Any] = {}
    for field in dataclasses.fields(StackGANConfig):
        value = getattr(args, field.name)
        if value is None:
            continue
        if field.name == "conditional":
            value = False  # the flag is --unconditional
        overrides[field.name] = value
    if "variant" in overrides and "branches" not in overrides and not args.init_from:
        overrides["branches"] = get_variant(overrides["variant"]).default_branches
    config = base.replace(**overrides)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingOptions) if f.name != "config"}
    if values["epochs"] is not None:
        values["epochs"] = math.ceil(values["epochs"])
    values["betas"] = tuple(values["betas"])
    return TrainingOptions(config=config, **values)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.init_from and Path(args.output).resolve() == Path(args.init_from).resolve():
            # Training writes checkpoints into --output: the same folder would overwrite the model
            # being fine-tuned (models/default is the shipped one) with a half-trained copy.
            raise ValueError(f"--output {args.output} is the --init-from model; choose a new folder such as runs/NAME")
        options = options_from_args(args)
        trainer = Trainer(options)
    except (ValueError, ckpt.CheckpointError, BundleError, ManifestError, LineageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"training StackGAN-{trainer.config.variant} {trainer.config.image_sizes} px on {trainer.device}: "
        f"{trainer.dataset.report.summary()}; G {count_parameters(trainer.generator):,} params "
        f"({count_parameters(trainer.generator, trainable_only=True):,} trained), "
        f"{trainer.total_steps} steps at batch {trainer.batch_size}"
    )
    output = trainer.run()
    print(f"step {trainer.step}: checkpoint in {output}, samples in {output / 'samples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
