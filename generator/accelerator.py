"""One-shot training of the full StackGAN-v2 on an accelerator, under a wall-clock budget.

    python3 -m generator.accelerator BUNDLE OUT --time-budget 480      (or scripts/train-accelerator.sh)

Made for a machine that has only PyTorch, numpy, Pillow, safetensors, tqdm and transformers: it reads
a training bundle (``python -m generator.bundle pack``) so the text encoder is never loaded, imports
nothing of Django or the app, and fetches nothing. On CUDA it trains with bf16 autocast, TF32 and
channels-last. The budget is split into phases that scale with it (64 px, then 128 px grown from it,
then 256 px), each checkpointing at least once a minute, so a run that is stopped loses at most a
minute; running the same command again resumes the phase that was interrupted. What is left of the
budget then goes to the evaluation (FID*, R-precision and diversity per scale, with both baselines),
computed with the bundle's cached caption embeddings. Everything is written into OUT:

    OUT/plan.json              the phases and their budgets, and which have finished
    OUT/p1-64, p2-128, p3-256  each phase's checkpoint, training state, losses.jsonl, samples/
    OUT/model                  the final checkpoint (config, weights, lineage, samples.png, evaluation.json)
    OUT/evaluation.txt         the evaluation table
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

# Share of the training budget each phase gets. The 64 px phase learns layout and colour (the part the
# CPU runs showed pays most); the 256 px phase trains all three scales at once and is the slowest per step.
PHASE_SHARES = ((1, 0.35), (2, 0.25), (3, 0.40))
MODEL_FILES = ("config.json", "generator.safetensors", "lineage.json", "samples.png", "samples.json")


@dataclass(frozen=True)
class Phase:
    name: str
    branches: int
    seconds: float
    max_steps: int


def plan_phases(train_seconds: float, max_steps: int, base_size: int) -> list[Phase]:
    return [Phase(f"p{i}-{base_size * 2 ** (branches - 1)}", branches, train_seconds * share, max_steps)
            for i, (branches, share) in enumerate(PHASE_SHARES, start=1)]


def run(bundle: Path, out: Path, time_budget: float, eval_seconds: float | None = None, *, ngf: int = 64,
        ndf: int = 64, base_size: int = 64, batch_size: int = 24, max_steps: int = 1_000_000,
        device: str | None = None, eval_samples: int = 500, seed: int = 0, checkpoint_seconds: float = 60.0,
        extra_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the three phases within ``time_budget`` seconds (evaluation included) and evaluate."""
    from generator.bundle import BundleTextEncoder, folder_size
    from generator.config import StackGANConfig
    from generator.train import Trainer, TrainingOptions

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    encoder = BundleTextEncoder(bundle)
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    device = device or ("cuda" if cuda else "cpu")
    # The evaluation trains two small feature networks and generates ~900 images per model; on a GPU
    # that is about a minute. Whatever the phases leave unused is added to it.
    eval_seconds = eval_seconds if eval_seconds is not None else min(150.0, 0.3 * time_budget)
    train_seconds = max(time_budget - eval_seconds, 1.0)
    plan_path = out / "plan.json"
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    phases = plan_phases(train_seconds, max_steps, base_size)
    plan.setdefault("finished", [])
    plan.update({"bundle": str(bundle), "bundle_bytes": folder_size(bundle), "device": device,
                 "time_budget": time_budget, "eval_seconds": eval_seconds,
                 "phases": [phase.__dict__ for phase in phases]})
    if cuda:
        plan["gpu"] = torch.cuda.get_device_name(0)
    plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    options = {"diff_augment": "color,translation,cutout", "matching_weight": 2.0, "mode_seeking_weight": 1.0,
               "colour_weight": 0.0, **(extra_options or {})}
    previous: Path | None = None
    for phase in phases:
        folder = out / phase.name
        if phase.name in plan["finished"]:
            previous = folder
            continue
        config = StackGANConfig(ngf=ngf, ndf=ndf, base_size=base_size, branches=phase.branches,
                                text_dim=encoder.dim)
        # A grown branch starts from random weights; colour consistency makes it agree with the scale below.
        colour = options["colour_weight"] or (10.0 if phase.branches > 1 else 0.0)
        phase_options = {k: v for k, v in options.items() if k != "colour_weight"}
        trainer = Trainer(TrainingOptions(
            data=bundle, output=folder, config=config, batch_size=batch_size, steps=phase.max_steps,
            time_budget=phase.seconds, device=device, seed=seed, init_from=previous, colour_weight=colour,
            precision="bf16" if cuda else "float32", channels_last=cuda, checkpoint_every=0,
            checkpoint_seconds=checkpoint_seconds, sample_every=0, log_every=10, progress=False,
            weights_dtype="float16" if phase.branches == 3 else "float32", **phase_options))
        logger.info("%s: %s px for %.0f s on %s", phase.name, config.image_sizes, phase.seconds, device)
        trainer.run()
        plan["finished"].append(phase.name)
        plan.setdefault("steps", {})[phase.name] = trainer.step
        plan_path.write_text(json.dumps(plan, indent=2) + "\n")
        previous = folder

    model = out / "model"
    model.mkdir(exist_ok=True)
    for name in MODEL_FILES:
        shutil.copy2(previous / name, model / name)
    from generator.evaluate import evaluate, format_table

    left = time_budget - (time.monotonic() - started)
    logger.info("evaluating with %.0f s of the budget left", left)
    report = evaluate(model, bundle, samples=eval_samples, device=device, cache_dir=out / ".cache")
    (model / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    table = format_table(report)
    (out / "evaluation.txt").write_text(table + "\n")
    plan["wall_seconds"] = round(time.monotonic() - started, 1)
    plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    print(table)
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m generator.accelerator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="training bundle folder (python -m generator.bundle pack)")
    parser.add_argument("out", type=Path, help="folder for checkpoints, samples, losses and the evaluation")
    parser.add_argument("--time-budget", type=float, default=480.0,
                        help="wall-clock seconds for training and evaluation together [480]")
    parser.add_argument("--eval-seconds", type=float, help="part of the budget kept for the evaluation [min(150, 30%%)]")
    parser.add_argument("--ngf", type=int, default=64, help="generator width [64, the paper's]")
    parser.add_argument("--ndf", type=int, default=64, help="discriminator width [64]")
    parser.add_argument("--base-size", type=int, default=64, help="first scale in px; the others are 2x and 4x [64]")
    parser.add_argument("--batch-size", type=int, default=24, help="images per step [24, the paper's]")
    parser.add_argument("--max-steps", type=int, default=1_000_000, help="cap on the steps of each phase")
    parser.add_argument("--eval-samples", type=int, default=500, help="captions generated for the evaluation [500]")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: CUDA when present)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from generator.bundle import BundleError
    from generator.checkpoint import CheckpointError
    from generator.data import ManifestError

    if args.time_budget <= 0:
        print("error: --time-budget must be positive", file=sys.stderr)
        return 2
    try:
        run(args.bundle, args.out, args.time_budget, args.eval_seconds, ngf=args.ngf, ndf=args.ndf,
            base_size=args.base_size, batch_size=args.batch_size, max_steps=args.max_steps, device=args.device,
            eval_samples=args.eval_samples, seed=args.seed)
    except (BundleError, CheckpointError, ManifestError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done: {args.out / 'model'} (evaluation in {args.out / 'evaluation.txt'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
