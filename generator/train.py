"""Train StackGAN-v1 or StackGAN-v2 on a manifest.jsonl dataset folder.

    python -m generator.train --data DATASET --output runs/my-model --steps 2000

Writes an inference checkpoint (config.json, generator.safetensors with the EMA weights,
lineage.json), the training state for resuming, losses.jsonl and sample grids under samples/.
Running the same command again resumes from the last checkpoint in --output.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from generator import checkpoint as ckpt
from generator.augment import diff_augment, parse_policy
from generator.config import StackGANConfig
from generator.data import CaptionedImageDataset, ManifestItem, embed_captions_cached, manifest_sha256, read_manifest
from generator.losses import (
    colour_consistency_loss,
    discriminator_loss,
    generator_adversarial_loss,
    kl_divergence,
    mode_seeking_loss,
)
from generator.matching import load_or_fit_encoder, matching_loss
from generator.models import build_discriminators, build_generator, count_parameters, init_weights
from generator.pipeline import default_device, tensor_to_pil
from generator.text_encoder import TextEncoder

logger = logging.getLogger(__name__)


@dataclass
class TrainingOptions:
    data: Path
    output: Path
    config: StackGANConfig = field(default_factory=StackGANConfig)
    batch_size: int = 24
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    steps: int | None = None
    epochs: int | None = None
    kl_weight: float = 2.0
    uncond_weight: float = 1.0
    colour_weight: float = 0.0
    matching_weight: float = 0.0
    matching_epochs: int = 20
    mode_seeking_weight: float = 0.0
    train_branches: tuple[int, ...] | None = None
    diff_augment: str = ""
    ema_decay: float = 0.999
    lr_decay_epochs: int = 0
    seed: int = 0
    device: str | None = None
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    init_from: Path | None = None
    text_encoder: Path | None = None
    sample_captions: list[str] | None = None
    weights_dtype: str = "float32"
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None:
            raise ValueError("give --steps or --epochs")
        if self.batch_size < 2:
            raise ValueError("batch size must be at least 2 (batch norm needs two samples)")
        if self.weights_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError("weights dtype must be float32, float16 or bfloat16")
        if self.matching_weight < 0:
            raise ValueError("the matching-loss weight cannot be negative")
        if self.mode_seeking_weight < 0:
            raise ValueError("the mode-seeking weight cannot be negative")
        if self.train_branches is not None:
            bad = [i for i in self.train_branches if not 0 <= i < self.config.branches]
            if bad or not self.train_branches:
                raise ValueError(f"train branches must be scale indices 0..{self.config.branches - 1}, got {self.train_branches}")
        parse_policy(self.diff_augment)


def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for ema_p, p in zip(ema.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(ema.buffers(), model.buffers()):
            ema_b.copy_(b)


def load_matching(module: nn.Module, tensors: dict[str, torch.Tensor]) -> list[str]:
    """Load every tensor whose name and shape match; returns the names left at initialisation."""
    state = module.state_dict()
    matched = {k: v.to(state[k].dtype) for k, v in tensors.items() if k in state and state[k].shape == v.shape}
    if not matched:
        raise ckpt.CheckpointError("the checkpoint to start from shares no weights with this model")
    module.load_state_dict(matched, strict=False)
    return sorted(set(state) - set(matched))


def make_grid(images: list[Image.Image], columns: int) -> Image.Image:
    width, height = images[0].size
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (columns * width, rows * height), (255, 255, 255))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * width, (i // columns) * height))
    return grid


class Trainer:
    """Owns the networks, optimisers and the loop; ``run`` trains until the step budget is spent."""

    def __init__(self, options: TrainingOptions, item_filter: Callable[[ManifestItem], str | None] | None = None):
        self.options = options
        self.config = options.config
        self.device = torch.device(options.device) if options.device else default_device()
        self.output = Path(options.output)
        self.output.mkdir(parents=True, exist_ok=True)
        random.seed(options.seed)
        torch.manual_seed(options.seed)
        self.encoder = TextEncoder(options.text_encoder, device=self.device) if self.config.conditional else None
        if self.encoder is not None and self.encoder.dim != self.config.text_dim:
            raise ValueError(f"the text encoder gives {self.encoder.dim}-d embeddings; config says {self.config.text_dim}")
        items = read_manifest(options.data)
        embeddings = None
        if self.encoder is not None:
            captions = [c for item in items if item.trainable for c in item.captions]
            embeddings = embed_captions_cached(captions, self.encoder, Path(options.data) / ".cache")
        self.dataset = CaptionedImageDataset(options.data, self.config.image_sizes, embeddings, items, item_filter)
        logger.info("dataset: %s", self.dataset.report.summary())
        self.batch_size = min(options.batch_size, len(self.dataset))
        self.steps_per_epoch = max(1, len(self.dataset) // self.batch_size)
        self.total_steps = options.steps if options.steps is not None else options.epochs * self.steps_per_epoch
        self.augment_policy = parse_policy(options.diff_augment)
        self.matcher, self.matcher_sha256 = None, None
        if options.matching_weight > 0 and embeddings is not None:
            self.matcher, self.matcher_sha256 = self._matching_encoder(embeddings)

        self.generator = build_generator(self.config).to(self.device)
        self.discriminators = build_discriminators(self.config).to(self.device)
        init_weights(self.generator)
        init_weights(self.discriminators)
        # StackGAN-v1 trains one stage at a time: Stage-I alone, or Stage-II over a frozen Stage-I.
        self.trained_scales = (
            list(range(self.config.branches)) if self.config.variant == "v2" else [self.config.branches - 1]
        )
        if options.train_branches is not None:
            self.trained_scales = sorted(set(options.train_branches))
            # The scales not trained keep their weights: a new branch over frozen lower stages costs no
            # backward pass through them, and what the lower stages learned cannot be undone.
            for index in range(self.config.branches):
                if index not in self.trained_scales:
                    for module in self.generator.branch_modules(index):
                        module.requires_grad_(False)
        # Scales above the highest trained one need not be computed while training.
        self.forward_branches = self.trained_scales[-1] + 1
        self.step = 0
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.parent_lineage: dict[str, Any] = {}
        if options.init_from:
            self._init_from(Path(options.init_from))
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(
            [p for p in self.generator.parameters() if p.requires_grad], lr=options.lr_g, betas=options.betas
        )
        self.opt_d = [
            torch.optim.Adam(self.discriminators[i].parameters(), lr=options.lr_d, betas=options.betas)
            for i in self.trained_scales
        ]
        if options.resume:
            self._resume()
        self.sample_captions = options.sample_captions or self.dataset.captions()[:8]
        self.sample_seeds = list(range(4))
        self._stop_requested = False

    # -- set-up -------------------------------------------------------------------------------
    def _init_from(self, folder: Path) -> None:
        """Fine-tune from an existing checkpoint (its EMA weights, and its discriminators if saved)."""
        source_config, _ = ckpt.read_config(folder)
        same = dataclasses.replace(source_config, branches=self.config.branches)
        if same != self.config:
            raise ckpt.CheckpointError(
                f"{folder} was trained with {source_config}; fine-tuning needs the same architecture "
                f"(only the number of branches may grow), got {self.config}"
            )
        from safetensors.torch import load_file

        weights = load_file(str(folder / ckpt.WEIGHTS_FILE))
        if self.config.variant == "v1" and source_config.branches == 1 and self.config.branches == 2:
            weights = {f"stage_one.{k.removeprefix('stage_one.')}": v for k, v in weights.items()}
        fresh = load_matching(self.generator, weights)
        lineage_file = folder / ckpt.LINEAGE_FILE
        if lineage_file.is_file():
            self.parent_lineage = json.loads(lineage_file.read_text())
        if fresh:
            logger.info("fine-tuning from %s; %d tensors start fresh (new branches)", folder, len(fresh))
        state = ckpt.load_training_state(folder)
        if state is not None:
            tensors, _ = state
            d_weights = {k.removeprefix("discriminators."): v for k, v in tensors.items() if k.startswith("discriminators.")}
            if d_weights:
                load_matching(self.discriminators, d_weights)

    def _matching_encoder(self, embeddings: dict[str, torch.Tensor]) -> tuple[nn.Module, str]:
        """The frozen image-caption encoder of the matching loss, trained on this run's real images."""
        from torch.nn import functional as F

        images = torch.cat([
            F.interpolate(torch.stack(self.dataset.pixels[i:i + 128]).float().div(127.5).sub(1), size=(64, 64),
                          mode="bilinear", antialias=True, align_corners=False)
            for i in range(0, len(self.dataset.pixels), 128)
        ])
        per_item = [torch.stack([embeddings[c] for c in item.captions]) for item in self.dataset.items]
        key = manifest_sha256(self.options.data) + self.encoder.fingerprint + ",".join(i.image for i in self.dataset.items)
        encoder, digest = load_or_fit_encoder(images, per_item, key, Path(self.options.data) / ".cache",
                                              seed=self.options.seed, epochs=self.options.matching_epochs)
        return encoder.to(self.device), digest

    def _resume(self) -> None:
        state = ckpt.load_training_state(self.output)
        if state is None:
            return
        tensors, plain = state
        saved_config = StackGANConfig.from_dict(plain["config"])
        if saved_config != self.config:
            raise ckpt.CheckpointError(
                f"{self.output} holds a run with a different architecture ({saved_config}); "
                "use another --output or --no-resume"
            )
        for prefix, module in (("generator.", self.generator), ("ema.", self.ema), ("discriminators.", self.discriminators)):
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        ckpt.restore_optimizer(self.opt_g, "opt_g", tensors, plain["opt_g"])
        for i, opt in enumerate(self.opt_d):
            ckpt.restore_optimizer(opt, f"opt_d{i}", tensors, plain["opt_d"][i])
        self.step = plain["step"]
        self.started_at = plain.get("started_at", self.started_at)
        random.setstate(_tuple_state(plain["python_rng"]))
        torch.set_rng_state(tensors["rng.torch"])
        logger.info("resumed %s at step %d", self.output, self.step)

    # -- the loop -----------------------------------------------------------------------------
    def batches(self) -> Iterator[dict[str, Any]]:
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=True)
        while True:
            yield from loader

    def learning_rate_factor(self) -> float:
        if not self.options.lr_decay_epochs:
            return 1.0
        epoch = self.step // self.steps_per_epoch
        return 0.5 ** (epoch // self.options.lr_decay_epochs)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        options = self.options
        real = [img.to(self.device, non_blocking=True) for img in batch["images"]]
        batch_size = real[0].size(0)
        text = batch["embedding"].to(self.device) if self.config.conditional else None
        # The mode-seeking term needs a second image for some captions: the first half of the batch again,
        # with other latents, in the same forward pass.
        pairs = batch_size // 2 if options.mode_seeking_weight > 0 and text is not None else 0
        z = torch.randn(batch_size + pairs, self.config.z_dim, device=self.device)
        g_text = torch.cat([text, text[:pairs]]) if pairs else text
        if self.forward_branches < self.config.branches:
            all_fakes, mu, logvar = self.generator(z, g_text, branches=self.forward_branches)
        else:
            all_fakes, mu, logvar = self.generator(z, g_text)
        fakes = [f[:batch_size] for f in all_fakes]
        if mu is not None:
            mu, logvar = mu[:batch_size], logvar[:batch_size]
        mu_wrong = None
        if self.config.conditional:
            with torch.no_grad():
                ca = self.generator.ca if self.config.variant == "v2" else self._trained_ca()
                mu_wrong = ca.encode(batch["wrong_embedding"].to(self.device))[0]
        for group in self.opt_g.param_groups:
            group["lr"] = options.lr_g * self.learning_rate_factor()

        losses: dict[str, float] = {}
        cond = mu.detach() if mu is not None else None
        for opt, i in zip(self.opt_d, self.trained_scales):
            disc = self.discriminators[i]
            for group in opt.param_groups:
                group["lr"] = options.lr_d * self.learning_rate_factor()
            real_seen = diff_augment(real[i], self.augment_policy)
            real_out = disc(real_seen, cond)
            wrong_out = disc(real_seen, mu_wrong) if mu_wrong is not None else (None, None)
            fake_out = disc(diff_augment(fakes[i].detach(), self.augment_policy), cond)
            loss_d = discriminator_loss(real_out, wrong_out, fake_out, options.uncond_weight)
            opt.zero_grad(set_to_none=True)
            loss_d.backward()
            opt.step()
            losses[f"loss_d{self.config.image_sizes[i]}"] = loss_d.item()

        loss_g = torch.zeros((), device=self.device)
        for i in self.trained_scales:
            seen = diff_augment(fakes[i], self.augment_policy)
            loss_g = loss_g + generator_adversarial_loss(self.discriminators[i](seen, mu), options.uncond_weight)
        losses["loss_g_adv"] = loss_g.item()
        if self.matcher is not None:
            # On the largest trained scale: its gradient reaches every stage below it.
            matching = matching_loss(self.matcher, fakes[self.trained_scales[-1]], text)
            loss_g = loss_g + options.matching_weight * matching
            losses["matching"] = matching.item()
        if pairs:
            seeking = sum(
                mode_seeking_loss(all_fakes[i][:pairs], all_fakes[i][batch_size:], z[:pairs], z[batch_size:])
                for i in self.trained_scales
            ) / len(self.trained_scales)
            loss_g = loss_g + options.mode_seeking_weight * seeking
            losses["mode_seeking"] = seeking.item()
        if mu is not None and options.kl_weight > 0:
            kl = kl_divergence(mu, logvar)
            loss_g = loss_g + options.kl_weight * kl
            losses["kl"] = kl.item()
        if options.colour_weight > 0 and self.config.variant == "v2":
            colour = sum(
                colour_consistency_loss(fakes[i - 1], fakes[i], options.colour_weight)
                for i in range(1, len(fakes)) if i in self.trained_scales
            )
            if torch.is_tensor(colour):
                loss_g = loss_g + colour
                losses["colour"] = colour.item()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        losses["loss_g"] = loss_g.item()
        # Warm-up of the EMA decay, so that short runs do not sample from near-initial weights.
        update_ema(self.ema, self.generator, min(options.ema_decay, (1 + self.step) / (10 + self.step)))
        return losses

    def _trained_ca(self) -> nn.Module:
        return self.generator.stage_two.ca if self.generator.stage_two is not None else self.generator.stage_one.ca

    def run(self) -> Path:
        from tqdm import tqdm

        self._install_signal_handlers()
        log = (self.output / "losses.jsonl").open("a")
        batches = self.batches()
        self.generator.train()
        self.discriminators.train()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.options.progress, unit="step")
        started = time.perf_counter()
        try:
            while self.step < self.total_steps and not self._stop_requested:
                losses = self.train_step(next(batches))
                self.step += 1
                bar.update(1)
                if self.step % self.options.log_every == 0 or self.step == self.total_steps:
                    record = {"step": self.step, "epoch": self.step / self.steps_per_epoch, **losses,
                              "seconds": round(time.perf_counter() - started, 3)}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if k in ("loss_g", "kl")})
                if self.options.sample_every and self.step % self.options.sample_every == 0:
                    self.write_samples()
                if self.options.checkpoint_every and self.step % self.options.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
            log.close()
        self.write_samples()
        self.save()
        return self.output

    def _install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT finish the current step, save, and stop: a stopped run loses nothing."""
        def request_stop(signum: int, frame: Any) -> None:
            logger.warning("signal %d: saving a checkpoint at step %d and stopping", signum, self.step)
            self._stop_requested = True

        try:
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)
        except ValueError:  # not the main thread (e.g. under a test runner): keep the defaults
            pass

    # -- outputs ------------------------------------------------------------------------------
    @torch.no_grad()
    def write_samples(self) -> Path:
        """A grid: one row per fixed caption, one column per fixed seed, from the EMA weights."""
        captions = self.sample_captions if self.config.conditional else [""] * 4
        rows = []
        for caption in captions:
            z = torch.stack([torch.randn(self.config.z_dim, generator=torch.Generator().manual_seed(s)) for s in self.sample_seeds])
            text = None
            if self.config.conditional:
                text = self.encoder.encode([caption]).expand(len(self.sample_seeds), -1).to(self.device)
            noise = torch.zeros(len(self.sample_seeds), self.config.cond_dim, device=self.device)
            images, _, _ = self.ema(z.to(self.device), text, noise if self.config.conditional else None)
            rows.extend(tensor_to_pil(images[-1]))
        grid = make_grid(rows, columns=len(self.sample_seeds))
        path = self.output / "samples" / f"step-{self.step:07d}.png"
        path.parent.mkdir(exist_ok=True)
        grid.save(path)
        grid.save(self.output / "samples.png")
        (self.output / "samples.json").write_text(json.dumps({"step": self.step, "rows": captions, "seeds": self.sample_seeds}, indent=2))
        return path

    def lineage(self) -> dict[str, Any]:
        """What this checkpoint was made from: every dataset and training phase, the ones of the
        checkpoint it was fine-tuned from included, so the data policy sees all of them."""
        report = self.dataset.report
        dataset = {
            "name": Path(self.options.data).resolve().name,
            "manifest_sha256": manifest_sha256(self.options.data),
            "items_used": report.used,
            "items_skipped": len(report.skipped),
            "skipped": [dataclasses.asdict(s) for s in report.skipped[:1000]],
            "licences": report.licences,
            "attributions": sorted({i.attribution for i in self.dataset.items if i.attribution})[:1000],
        }
        phase = {
            "run": self.output.name,
            "dataset": dataset["name"],
            "sizes": self.config.image_sizes,
            "started_at": self.started_at,
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "steps": self.step,
            "batch_size": self.batch_size,
            "epochs": round(self.step / self.steps_per_epoch, 2),
            "device": str(self.device),
            "init_from": str(self.options.init_from) if self.options.init_from else None,
            "diff_augment": list(self.augment_policy),
            "mode_seeking_weight": self.options.mode_seeking_weight,
            "trained_scales": [self.config.image_sizes[i] for i in self.trained_scales],
            "matching_loss": {
                "weight": self.options.matching_weight,
                "encoder": "MatchingImageEncoder trained contrastively on this run's real images",
                "encoder_sha256": self.matcher_sha256,
            } if self.matcher is not None else None,
        }
        parent_datasets = [d for d in self.parent_lineage.get("datasets", [])
                           if d.get("manifest_sha256") != dataset["manifest_sha256"]]
        parent_training = self.parent_lineage.get("training") or {}
        earlier = parent_training.get("phases") or ([parent_training] if parent_training else [])
        return {"datasets": parent_datasets + [dataset], "training": {**phase, "phases": earlier + [phase]}}

    def save(self) -> Path:
        dtype = getattr(torch, self.options.weights_dtype)
        encoder_info = self.encoder.describe() if self.encoder is not None else None
        ckpt.save_pretrained(self.output, self.config, self.ema.state_dict(), encoder_info, self.lineage(), dtype)
        tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        for prefix, module in (("generator.", self.generator), ("ema.", self.ema), ("discriminators.", self.discriminators)):
            tensors.update({prefix + k: v for k, v in module.state_dict().items()})
        opt_g_tensors, opt_g_plain = ckpt.flatten_optimizer(self.opt_g, "opt_g")
        tensors.update(opt_g_tensors)
        opt_d_plain = []
        for i, opt in enumerate(self.opt_d):
            t, plain = ckpt.flatten_optimizer(opt, f"opt_d{i}")
            tensors.update(t)
            opt_d_plain.append(plain)
        ckpt.save_training_state(
            self.output,
            tensors,
            {
                "step": self.step,
                "config": self.config.to_dict(),
                "started_at": self.started_at,
                "opt_g": opt_g_plain,
                "opt_d": opt_d_plain,
                "python_rng": random.getstate(),
                "options": {k: str(v) for k, v in dataclasses.asdict(self.options).items()},
            },
        )
        return self.output


def _tuple_state(state: Any) -> Any:
    """random.getstate() comes back from JSON with lists where tuples were."""
    return tuple(_tuple_state(s) for s in state) if isinstance(state, list) else state


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generator.train",
        description="Train StackGAN-v1 or StackGAN-v2 on a dataset folder with manifest.jsonl. "
        "Run the same command again to resume from the last checkpoint in --output.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data and output")
    data.add_argument("--data", type=Path, required=True, help="dataset folder holding manifest.jsonl")
    data.add_argument("--output", type=Path, required=True, help="checkpoint folder to write (and resume from)")
    data.add_argument("--init-from", type=Path, help="fine-tune from this checkpoint folder (architecture must match; branches may grow)")
    data.add_argument("--text-encoder", type=Path, help="local transformers folder (default: packaged all-MiniLM-L6-v2)")
    data.add_argument("--no-resume", dest="resume", action="store_false", help="ignore a training state in --output")
    model = parser.add_argument_group("architecture (defaults to --init-from's when fine-tuning)")
    model.add_argument("--variant", choices=("v1", "v2"), help="StackGAN-v1 (two stages) or StackGAN-v2 (tree) [v2]")
    model.add_argument("--branches", type=int, help="output scales: v2 1-3 (64/128/256 px), v1 1 (Stage-I) or 2 (Stage-II) [3]")
    model.add_argument("--base-size", type=int, help="size of the first scale in pixels [64]")
    model.add_argument("--ngf", type=int, help="generator width [64]")
    model.add_argument("--ndf", type=int, help="discriminator width [64]")
    model.add_argument("--z-dim", type=int, help="noise dimensions [100]")
    model.add_argument("--cond-dim", type=int, help="conditioning-augmentation dimensions [128]")
    model.add_argument("--num-residual", type=int, help="residual blocks per refining stage [2]")
    model.add_argument("--unconditional", action="store_true", help="ignore captions (z replaces the condition)")
    train = parser.add_argument_group("optimisation")
    train.add_argument("--batch-size", type=int, default=24, help="images per step (the paper uses 24)")
    train.add_argument("--steps", type=int, help="total optimiser steps (counting from 0 across resumes)")
    train.add_argument("--epochs", type=float, help="total epochs, when --steps is not given")
    train.add_argument("--lr-g", type=float, default=2e-4, help="generator learning rate")
    train.add_argument("--lr-d", type=float, default=2e-4, help="discriminator learning rate")
    train.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    train.add_argument("--beta2", type=float, default=0.999, help="Adam beta2")
    train.add_argument("--lr-decay-epochs", type=int, default=None, help="halve learning rates every N epochs (v1 default 20, v2 off)")
    train.add_argument("--kl-weight", type=float, default=2.0, help="weight of the conditioning-augmentation KL term")
    train.add_argument("--uncond-weight", type=float, default=1.0, help="weight of the unconditional (JCU) loss terms")
    train.add_argument("--colour-weight", type=float, default=0.0, help="lambda1 of the colour-consistency term (lambda2 = 5 x); 0 = off")
    train.add_argument("--matching-weight", type=float, default=0.0,
                       help="weight of the image-caption matching loss (AttnGAN's DAMSM, sentence level); 0 = off")
    train.add_argument("--matching-epochs", type=int, default=20, help="epochs to train the matching loss's image encoder")
    train.add_argument("--mode-seeking-weight", type=float, default=0.0,
                       help="weight of MSGAN's mode-seeking term against seeds of one caption collapsing; 0 = off")
    train.add_argument("--train-branches", type=lambda text: tuple(int(x) for x in text.split(",")), default=None,
                       help="comma-separated scale indices to train (0 = base); the others stay frozen [all for v2]")
    train.add_argument("--diff-augment", default="",
                       help="DiffAugment policies before the discriminators, e.g. color,translation,cutout ('' = off)")
    train.add_argument("--ema-decay", type=float, default=0.999, help="decay of the generator weight average that is saved")
    train.add_argument("--seed", type=int, default=0, help="random seed of initialisation, data order and noise")
    train.add_argument("--device", help="cuda, cuda:1, cpu ... (default: CUDA when present)")
    out = parser.add_argument_group("logging and checkpoints")
    out.add_argument("--sample-every", type=int, default=500, help="write a sample grid every N steps (0 = only at the end)")
    out.add_argument("--checkpoint-every", type=int, default=500, help="save checkpoint and training state every N steps")
    out.add_argument("--log-every", type=int, default=10, help="append losses to losses.jsonl every N steps")
    out.add_argument("--sample-caption", action="append", dest="sample_captions", help="caption for the sample grid (repeatable)")
    out.add_argument("--weights-dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="dtype of the saved inference weights")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def options_from_args(args: argparse.Namespace) -> TrainingOptions:
    base = ckpt.read_config(args.init_from)[0] if args.init_from else StackGANConfig()
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("variant", "branches", "base_size", "ngf", "ndf", "z_dim", "cond_dim", "num_residual")
        if getattr(args, name) is not None
    }
    if args.unconditional:
        overrides["conditional"] = False
    if overrides.get("variant") == "v1" and "branches" not in overrides and not args.init_from:
        overrides["branches"] = 1
    config = base.replace(**overrides)
    lr_decay = args.lr_decay_epochs if args.lr_decay_epochs is not None else (20 if config.variant == "v1" else 0)
    epochs = args.epochs
    return TrainingOptions(
        data=args.data, output=args.output, config=config, batch_size=args.batch_size, lr_g=args.lr_g, lr_d=args.lr_d,
        betas=(args.beta1, args.beta2), steps=args.steps, epochs=math.ceil(epochs) if epochs else None,
        kl_weight=args.kl_weight, uncond_weight=args.uncond_weight, colour_weight=args.colour_weight,
        matching_weight=args.matching_weight, matching_epochs=args.matching_epochs, diff_augment=args.diff_augment,
        mode_seeking_weight=args.mode_seeking_weight, train_branches=args.train_branches,
        ema_decay=args.ema_decay, lr_decay_epochs=lr_decay, seed=args.seed, device=args.device,
        sample_every=args.sample_every, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        init_from=args.init_from, text_encoder=args.text_encoder, sample_captions=args.sample_captions,
        weights_dtype=args.weights_dtype, resume=args.resume, progress=not args.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        options = options_from_args(args)
        trainer = Trainer(options)
    except (ValueError, ckpt.CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"training StackGAN-{trainer.config.variant} {trainer.config.image_sizes} px on {trainer.device}: "
        f"{trainer.dataset.report.summary()}; G {count_parameters(trainer.generator):,} params, "
        f"{trainer.total_steps} steps at batch {trainer.batch_size}"
    )
    output = trainer.run()
    print(f"step {trainer.step}: checkpoint in {output}, samples in {output / 'samples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
