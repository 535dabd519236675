"""python -m generator params   : parameter counts of a configuration, module by module
python -m generator init-untrained DIR : write a randomly initialised checkpoint (for smoke tests)
python -m generator grid CHECKPOINT --caption "..." [--caption ...] [--data DATASET] --out FILE
    : a sample grid (one row per caption, one column per seed); with --data, captions the training
      set holds are refused, so the grid shows held-out captions only"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from generator.calibration import calibrate_batch_norm
from generator.checkpoint import save_pretrained
from generator.config import StackGANConfig
from generator.models import build_discriminators, build_generator, count_parameters, init_weights
from generator.registry import VARIANTS, get_variant
from lineage import Lineage

__all__ = ["calibrate_batch_norm", "init_untrained", "main", "parameter_table", "sample_grid", "training_captions"]


def parameter_table(config: StackGANConfig) -> list[tuple[str, int]]:
    generator = build_generator(config)
    rows = [(f"G.{name}", sum(count_parameters(m) for m in modules)) for name, modules in generator.parameter_groups()]
    rows.append(("G total", count_parameters(generator)))
    for i, disc in enumerate(build_discriminators(config)):
        rows.append((f"D{config.image_sizes[i]}", count_parameters(disc)))
    return rows


def init_untrained(folder: Path, config: StackGANConfig, seed: int, text_encoder: str | None) -> Path:
    """A randomly initialised checkpoint. Its lineage names no dataset, so the data policy refuses to
    activate it: it is for smoke tests and baselines, never for serving."""
    from generator.text_encoder import TextEncoder

    torch.manual_seed(seed)
    generator = build_generator(config)
    init_weights(generator)
    encoder = TextEncoder(text_encoder)
    calibrate_batch_norm(generator, config, encoder)
    lineage = Lineage(note=f"untrained: random initialisation, seed {seed}")
    return save_pretrained(folder, config, generator.state_dict(), encoder.describe(), lineage)


def training_captions(data: Path) -> set[str]:
    """Every caption of a dataset folder's manifest (or a bundle's), lower-cased and trimmed."""
    from lineage.manifest import read_manifest_lines

    captions: set[str] = set()
    for line in read_manifest_lines(data):
        item = line.data or {}
        for caption in item.get("captions") or [item.get("caption", "")]:
            captions.add(" ".join(str(caption).lower().split()))
    return captions


def sample_grid(checkpoint: Path, captions: list[str], seeds: list[int], out: Path) -> Path:
    """Draw every caption with every seed through the serving pipeline and save one grid PNG."""
    from generator.pipeline import StackGANPipeline
    from generator.train import make_grid

    pipeline = StackGANPipeline.from_pretrained(checkpoint, inference=True)
    drawn = pipeline(captions, num_images_per_caption=len(seeds), seeds=seeds * len(captions)).images
    make_grid([generated.image for generated in drawn], columns=len(seeds)).save(out)
    return out


def _grid_command(args: argparse.Namespace) -> int:
    captions = args.caption
    if args.data is not None:
        seen = training_captions(args.data)
        trained = [c for c in captions if " ".join(c.lower().split()) in seen]
        if trained:
            print(f"refused: these captions are in {args.data}'s training captions, not held out: {trained}",
                  file=sys.stderr)
            return 2
    out = sample_grid(args.checkpoint, captions, list(range(args.seeds)), args.out)
    print(f"grid of {len(captions)} captions x {args.seeds} seeds written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    grid = sub.add_parser("grid", help="a sample grid of a checkpoint, one row per caption")
    grid.add_argument("checkpoint", type=Path)
    grid.add_argument("--caption", action="append", required=True, help="a row's caption (repeat)")
    grid.add_argument("--seeds", type=int, default=4, help="columns: seeds 0..N-1")
    grid.add_argument("--data", type=Path, help="refuse captions this dataset trains on (held-out check)")
    grid.add_argument("--out", type=Path, required=True)
    for name in ("params", "init-untrained"):
        cmd = sub.add_parser(name)
        if name == "init-untrained":
            cmd.add_argument("folder", type=Path)
            cmd.add_argument("--seed", type=int, default=0)
            cmd.add_argument("--text-encoder")
        cmd.add_argument("--variant", default="v2", choices=tuple(VARIANTS))
        cmd.add_argument("--ngf", type=int, default=64)
        cmd.add_argument("--ndf", type=int, default=64)
        cmd.add_argument("--branches", type=int, default=None)
        cmd.add_argument("--text-dim", type=int, default=384)
    args = parser.parse_args(argv)
    if args.command == "grid":
        return _grid_command(args)
    branches = args.branches or get_variant(args.variant).max_branches
    config = StackGANConfig(variant=args.variant, ngf=args.ngf, ndf=args.ndf, branches=branches, text_dim=args.text_dim)
    if args.command == "params":
        print(f"StackGAN-{config.variant}, ngf={config.ngf}, ndf={config.ndf}, text_dim={config.text_dim}, "
              f"z={config.z_dim}, cond={config.cond_dim}, sizes={config.image_sizes}")
        for name, count in parameter_table(config):
            print(f"  {name:40} {count:>12,}")
        return 0
    path = init_untrained(args.folder, config, args.seed, args.text_encoder)
    print(f"untrained checkpoint written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
