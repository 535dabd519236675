"""python -m generator params   : parameter counts of a configuration, module by module
python -m generator init-untrained DIR : write a randomly initialised checkpoint (for smoke tests)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from generator.checkpoint import save_pretrained
from generator.config import StackGANConfig
from generator.models import build_discriminators, build_generator, count_parameters, init_weights


def parameter_table(config: StackGANConfig) -> list[tuple[str, int]]:
    generator = build_generator(config)
    rows = [(f"G.{name}", count_parameters(child)) for name, child in generator.named_children()]
    if config.variant == "v2":
        rows = []
        if generator.ca is not None:
            rows.append(("G.ca (conditioning augmentation)", count_parameters(generator.ca)))
        for i, (stage, head) in enumerate(zip(generator.stages, generator.heads)):
            rows.append((f"G.stage{i} ({config.image_sizes[i]} px) + image head", count_parameters(stage) + count_parameters(head)))
    rows.append(("G total", count_parameters(generator)))
    for i, disc in enumerate(build_discriminators(config)):
        rows.append((f"D{config.image_sizes[i]}", count_parameters(disc)))
    return rows


@torch.no_grad()
def calibrate_batch_norm(generator: torch.nn.Module, config: StackGANConfig, encoder, batches: int = 4) -> None:
    """Set batch-norm running statistics from real forward passes (cumulative average).

    A fresh network's running statistics (mean 0, variance 1) do not match its activations, so in
    eval mode it draws flat grey images; calibrated, it draws the varied noise an untrained
    generator really produces.
    """
    for module in generator.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    generator.train()
    captions = ["a red apple", "a blue bird", "a yellow flower", "a green tree"] * 4
    text = encoder.encode(captions) if config.conditional else None
    for _ in range(batches):
        generator(torch.randn(len(captions), config.z_dim), text)
    for module in generator.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    generator.eval()


def init_untrained(folder: Path, config: StackGANConfig, seed: int, text_encoder: str | None) -> Path:
    from generator.text_encoder import TextEncoder

    torch.manual_seed(seed)
    generator = build_generator(config)
    init_weights(generator)
    encoder = TextEncoder(text_encoder)
    calibrate_batch_norm(generator, config, encoder)
    lineage = {"datasets": [], "training": {"steps": 0, "note": f"untrained: random initialisation, seed {seed}"}}
    return save_pretrained(folder, config, generator.state_dict(), encoder.describe(), lineage)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("params", "init-untrained"):
        cmd = sub.add_parser(name)
        if name == "init-untrained":
            cmd.add_argument("folder", type=Path)
            cmd.add_argument("--seed", type=int, default=0)
            cmd.add_argument("--text-encoder")
        cmd.add_argument("--variant", default="v2", choices=("v1", "v2"))
        cmd.add_argument("--ngf", type=int, default=64)
        cmd.add_argument("--ndf", type=int, default=64)
        cmd.add_argument("--branches", type=int, default=None)
        cmd.add_argument("--text-dim", type=int, default=384)
    args = parser.parse_args(argv)
    branches = args.branches or (3 if args.variant == "v2" else 2)
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
