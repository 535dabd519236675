#!/usr/bin/env python3
"""Take a trained checkpoint (an accelerator run's OUT/model, or a CPU run's folder) into models/default,
only if it is allowed and better.

    python scripts/promote-run.py CANDIDATE [--data data/twemoji] [--target models/default] [--dry-run]

1. The data policy checks the candidate's lineage.json (it fails closed: no lineage, no datasets or no
   licences is a refusal). The generator package never imports policies; this script joins the two.
2. The near-copy index of the training data is built (`python -m policies build-near-copy-index`).
3. The candidate and the shipped model are evaluated in the same run (same data, seeds and feature
   networks); the candidate replaces the shipped model only if its final scale has a lower FID* AND a
   higher R-precision, and its weights are at most 50 MB.

Exit status: 0 promoted (or would be, with --dry-run), 1 refused or not better, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MAX_WEIGHTS_BYTES = 50 * 1024 * 1024
COPIED = ("config.json", "generator.safetensors", "lineage.json", "samples.png", "samples.json")


def final_row(report: dict) -> dict:
    return next(row for name, row in report["rows"].items() if name.startswith("checkpoint"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidate", type=Path, help="checkpoint folder to promote")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "twemoji", help="the training data (dataset folder)")
    parser.add_argument("--target", type=Path, default=ROOT / "models" / "default", help="the shipped model's folder")
    parser.add_argument("--samples", type=int, default=500, help="captions generated per evaluation")
    parser.add_argument("--dry-run", action="store_true", help="check and compare, copy nothing")
    args = parser.parse_args(argv)

    from generator.checkpoint import CheckpointError, read_config
    from generator.evaluate import evaluate, format_table
    from lineage import LineageError, read_lineage
    from policies import load_policies
    from policies.__main__ import build_index

    try:
        read_config(args.candidate)
        lineage = read_lineage(args.candidate)
    except (CheckpointError, LineageError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    verdict = load_policies().data.check_lineage(lineage)
    if verdict.denied:
        for decision in verdict.decisions:
            print(f"refused by the data policy: {decision.rule_id}: {decision.message}", file=sys.stderr)
        return 1
    weights = args.candidate / "generator.safetensors"
    if weights.stat().st_size > MAX_WEIGHTS_BYTES:
        print(f"refused: {weights} is {weights.stat().st_size / 1e6:.1f} MB, over the 50 MB limit "
              "(train with --weights-dtype float16)", file=sys.stderr)
        return 1
    index = args.candidate / "near_copies.json"
    if build_index(str(args.data), str(index)) != 0:
        return 2

    reports = {}
    for name, folder in (("candidate", args.candidate), ("shipped", args.target)):
        reports[name] = evaluate(folder, args.data, args.samples)
        print(f"-- {name}: {folder}\n{format_table(reports[name])}")
    new, old = final_row(reports["candidate"]), final_row(reports["shipped"])
    better = new["fid_in_domain"] < old["fid_in_domain"] and new["r_precision"] > old["r_precision"]
    print(f"FID* {old['fid_in_domain']:.2f} -> {new['fid_in_domain']:.2f}, R-precision {old['r_precision']:.3f} -> "
          f"{new['r_precision']:.3f}, diversity {old.get('diversity', 0):.2f} -> {new.get('diversity', 0):.2f}")
    if not better:
        print("not promoted: the candidate must beat the shipped model on FID* and R-precision")
        return 1
    if args.dry_run:
        print("would promote (dry run)")
        return 0
    args.target.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (args.candidate / name).is_file():
            shutil.copy2(args.candidate / name, args.target / name)
    shutil.copy2(index, args.target / "near_copies.json")
    report = {**reports["candidate"], "checkpoint": str(args.target.relative_to(ROOT) if args.target.is_relative_to(ROOT)
                                                        else args.target)}
    (args.target / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"promoted {args.candidate} to {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
