"""Command line: python -m policies check-caption "..." | check-dataset DIR | check-image FILE |
evaluate-usage LABELLED.csv | build-near-copy-index DATA --out FILE.

Prints every decision with its rule id; exits 1 on deny (or on a missed target), 2 on a usage or
policy-file error."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from PIL import Image, UnidentifiedImageError

from policies.data import DatasetVerdict
from policies.decisions import Verdict
from policies.loader import PolicyError, load_policies
from policies.near_copy import NearCopyIndex, NearCopyIndexError
from policies.output import MAX_CHECKED_PIXELS
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
    if isinstance(verdict, DatasetVerdict):
        print(f"  items: {verdict.items_total} in the manifest, {verdict.items_usable} usable for training")
        for licence, count in sorted(verdict.licences.items()):
            duties = ", ".join(verdict.obligations.get(licence, [])) or "none"
            print(f"  licence {licence}: {count} items; obligations: {duties}")


def build_index(folder: str, out: str) -> int:
    """Thumbnails of every trainable image of a manifest folder, written as the near-copy index (JSON)."""
    from pathlib import Path

    from policies.data import read_manifest_lines

    root = Path(folder)
    try:
        items = read_manifest_lines(root / "manifest.jsonl")
    except OSError as exc:
        print(f"error: cannot read {root / 'manifest.jsonl'}: {exc}", file=sys.stderr)
        return 2

    def images():
        for item in items:
            if item.get("training_permission") != "allowed" or not isinstance(item.get("image"), str):
                continue
            try:
                with Image.open(root / item["image"]) as handle:
                    yield item["image"], handle.convert("RGB")
            except (OSError, UnidentifiedImageError):
                print(f"  skipped unreadable {item['image']}", file=sys.stderr)

    index = NearCopyIndex.build(images())
    Path(out).write_text(json.dumps(index.to_json()))
    print(f"{len(index.names)} training images indexed (thumbnails and local features for the near-copy search) in {out}")
    return 0


def evaluate_usage(args: argparse.Namespace) -> int:
    """Precision, recall, false positives and negatives by category, for one or two policy folders."""
    from pathlib import Path

    from policies.evaluation import LabelledSetError, evaluate, format_reports, meets_targets, read_labelled

    try:
        rows = read_labelled(Path(args.labelled).read_text(encoding="utf-8"), args.split)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {args.labelled}: {exc}", file=sys.stderr)
        return 2
    except LabelledSetError as exc:
        print(f"error: {args.labelled}: {exc}", file=sys.stderr)
        return 2
    folders = [("in force", args.policies or args.policy_dir)] + ([("proposed", args.compare)] if args.compare else [])
    reports = []
    for label, folder in folders:
        try:
            policies = load_policies(folder)
        except PolicyError as exc:
            print(f"error: {label} policy ({folder or 'shipped'}): {exc}", file=sys.stderr)
            return 2
        reports.append(evaluate(policies.usage, rows, f"{label} ({folder or 'shipped policies'})"))
    print(format_reports(reports, args.list))
    if args.min_recall is not None or args.max_false_positives is not None:
        misses = meets_targets(reports[-1], args.min_recall or 0.0,
                               1.0 if args.max_false_positives is None else args.max_false_positives, args.strict_look_alikes)
        if misses:
            print("\ntargets missed: " + "; ".join(misses))
            return 1
        print("\nevery category meets the targets")
    return 0


class ImageTooLarge(ValueError):
    pass


def read_checked_image(path: str, max_pixels: int = MAX_CHECKED_PIXELS) -> Image.Image:
    """The image as RGB, refused from its header alone when it declares more than ``max_pixels``:
    a 420 KB PNG declaring 12000 x 12000 pixels would otherwise take gigabytes to decode."""
    with warnings.catch_warnings():
        # Pillow's own bomb guard must not speak for us: the limit here is smaller and named.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as handle:
                width, height = handle.size
                if width * height > max_pixels:
                    raise ImageTooLarge(f"the image declares {width} x {height} pixels; the limit is {max_pixels} pixels")
                return handle.convert("RGB")
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"the image declares more pixels than the limit of {max_pixels}") from exc


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
    image.add_argument("--max-pixels", type=int, default=MAX_CHECKED_PIXELS,
                       help="refuse images declaring more pixels than this (default: the API's verify limit)")
    image.add_argument("--near-copy-index", help="near_copies.json of a checkpoint (or its folder)")
    index_cmd = commands.add_parser("build-near-copy-index", help="hash a dataset's images for the near-copy check")
    index_cmd.add_argument("folder")
    index_cmd.add_argument("--out", required=True)
    evaluate_cmd = commands.add_parser(
        "evaluate-usage", help="precision and recall of the usage policy on a labelled CSV (caption,expected[,category][,split])")
    evaluate_cmd.add_argument("labelled", help="CSV with the columns caption, expected (allow/review/deny), category, split")
    evaluate_cmd.add_argument("--policies", help="the policy folder in force (default: --policy-dir or the shipped set)")
    evaluate_cmd.add_argument("--compare", help="a proposed policy folder, measured side by side")
    evaluate_cmd.add_argument("--split", help="only the rows of this split (shipped: dev to dev20 learnt from; test, test2, test3 held out)")
    evaluate_cmd.add_argument("--list", type=int, default=40, help="how many misjudged captions to list per kind")
    evaluate_cmd.add_argument("--min-recall", type=float, help="exit 1 when a category's recall is below this")
    evaluate_cmd.add_argument("--max-false-positives", type=float,
                              help="exit 1 when the harmless captions a category's rules deny, as a share of all "
                                   "harmless ones, or overall, are above this")
    evaluate_cmd.add_argument("--strict-look-alikes", action="store_true",
                              help="with --max-false-positives: judge each category by its own look-alikes instead")
    args = parser.parse_args(argv)
    if args.command == "build-near-copy-index":
        return build_index(args.folder, args.out)
    if args.command == "evaluate-usage":
        return evaluate_usage(args)
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
            picture = read_checked_image(args.file, args.max_pixels)
        except ImageTooLarge as exc:
            print(f"error: {args.file}: {exc}", file=sys.stderr)
            return 2
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
            return 2
        index = None
        if args.near_copy_index:
            try:
                index = NearCopyIndex.load(args.near_copy_index)
            except NearCopyIndexError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            if index is None:
                print(f"error: no near-copy index at {args.near_copy_index}", file=sys.stderr)
                return 2
        verdict = policies.output.check_image(picture, index)
    print_verdict(verdict, args.json)
    return 1 if verdict.denied else 0


if __name__ == "__main__":
    sys.exit(main())
