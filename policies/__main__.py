"""Command line: python -m policies check-caption "..." | check-dataset DIR | check-image FILE.

Prints every decision with its rule id; exits 1 on deny, 2 on a usage or policy-file error."""

from __future__ import annotations

import argparse
import json
import sys

from PIL import Image, UnidentifiedImageError

from policies.decisions import Verdict
from policies.loader import PolicyError, load_policies
from policies.output import NearCopyIndex
from policies.usage import UsageContext


def print_verdict(verdict: Verdict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False))
        return
    print(f"{verdict.outcome.value.upper()}  ({verdict.stage} policy {verdict.policy_version[:12]})")
    for decision in verdict.decisions:
        evidence = json.dumps(decision.evidence, ensure_ascii=False) if decision.evidence else ""
        print(f"  {decision.outcome.value:6} {decision.rule_id}: {decision.message} {evidence}".rstrip())
    if not verdict.decisions:
        print("  no rule fired")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policies", description=__doc__)
    parser.add_argument("--policy-dir", help="folder of usage/data/output .toml files (default: the shipped set)")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    commands = parser.add_subparsers(dest="command", required=True)
    caption = commands.add_parser("check-caption", help="run the usage policy on a caption")
    caption.add_argument("caption")
    caption.add_argument("--purpose", default=None)
    dataset = commands.add_parser("check-dataset", help="run the data policy on a folder with manifest.jsonl")
    dataset.add_argument("folder")
    image = commands.add_parser("check-image", help="run the output policy on an image file")
    image.add_argument("file")
    image.add_argument("--near-copy-index", help="JSON index of training-image hashes")
    args = parser.parse_args(argv)
    try:
        policies = load_policies(args.policy_dir)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-caption":
        verdict = policies.usage.check_caption(args.caption, UsageContext(purpose=args.purpose))
    elif args.command == "check-dataset":
        try:
            verdict = policies.data.check_dataset(args.folder)
        except OSError as exc:
            print(f"error: cannot read {args.folder}/manifest.jsonl: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        try:
            with Image.open(args.file) as handle:
                picture = handle.convert("RGB")
            index = None
            if args.near_copy_index:
                with open(args.near_copy_index) as f:
                    index = NearCopyIndex.from_json(json.load(f))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
            return 2
        verdict = policies.output.check_image(picture, index)
    print_verdict(verdict, args.json)
    return 1 if verdict.denied else 0


if __name__ == "__main__":
    sys.exit(main())
