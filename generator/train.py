"""The training loop of StackGAN-v1 / StackGAN-v2 on a manifest.jsonl dataset folder or a training bundle.

    python -m generator.train --data DATASET --output runs/my-model --steps 2000   (see generator.train_cli)

Writes an inference checkpoint (config.json, generator.safetensors with the EMA weights,
lineage.json), the training state for resuming, losses.jsonl and sample grids under samples/.
Running the same command again resumes from the last checkpoint in --output.
"""

from __future__ import annotations

import argparse
import contextlib
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
from generator.bundle import BundleTextEncoder, is_bundle
from generator.config import StackGANConfig
from generator.data import CaptionedImageDataset, ManifestItem, embed_captions_cached, manifest_sha256, read_manifest
from generator.losses import (
    colour_consistency_loss,
    discriminator_loss,
    generator_adversarial_loss,
    kl_divergence,
    mode_seeking_loss,
)
from generator.matching import TEMPERATURE, fit_matching_encoder, symmetric_info_nce
from generator.models import build_discriminators, build_generator, init_weights
from generator.pipeline import default_device, tensor_to_pil
from lineage import DatasetRecord, Lineage, LineageError, SkippedRecord, TrainingPhase, read_lineage

logger = logging.getLogger(__name__)


def _option(default: Any, help: str, group: str = "optimisation", flag: str | None = None,
            argparse: dict[str, Any] | None = None) -> Any:
    """A TrainingOptions field whose command-line flag and help text are built from this metadata
    (``argparse``: extra keyword arguments of ``add_argument``)."""
    metadata = {"help": help, "group": group, "flag": flag, "argparse": argparse or {}}
    if isinstance(default, list | dict | tuple) and default:
        return field(default_factory=lambda: copy.copy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainingOptions:
    """Every setting of a training run. The command line (``generator.train_cli``) is built from these
    fields, so each default is written here once; ``metadata`` carries the help text and flag."""

    data: Path = field(metadata={"help": "dataset folder holding manifest.jsonl, or a training bundle",
                                 "group": "data and output", "argparse": {"required": True}})
    output: Path = field(metadata={"help": "checkpoint folder to write (and resume from)", "group": "data and output",
                                   "argparse": {"required": True}})
    config: StackGANConfig = field(default_factory=StackGANConfig, metadata={"cli": False})
    batch_size: int = _option(24, "images per step (the paper uses 24)")
    lr_g: float = _option(2e-4, "generator learning rate")
    lr_d: float = _option(2e-4, "discriminator learning rate")
    betas: tuple[float, float] = _option((0.5, 0.999), "Adam beta1 and beta2", argparse={"nargs": 2, "type": float})
    steps: int | None = _option(None, "total optimiser steps (counting from 0 across resumes)")
    epochs: int | None = _option(None, "total epochs, when --steps is not given (rounded up)", argparse={"type": float})
    time_budget: float | None = _option(
        None, "stop after this many seconds of training (with a checkpoint), whatever --steps says")
    kl_weight: float = _option(2.0, "weight of the conditioning-augmentation KL term")
    uncond_weight: float = _option(1.0, "weight of the unconditional (JCU) loss terms")
    colour_weight: float = _option(0.0, "lambda1 of the colour-consistency term (lambda2 = 5 x); 0 = off")
    matching_weight: float = _option(0.0, "weight of the image-caption matching loss (AttnGAN's DAMSM, sentence level); 0 = off")
    matching_epochs: int = _option(20, "epochs to train the matching loss's image encoder")
    mode_seeking_weight: float = _option(
        0.0, "weight of MSGAN's mode-seeking term against seeds of one caption collapsing (Mao et al. 2019); 0 = off")
    mode_seeking_on: str = _option(
        "z-and-condition", "what differs within a mode-seeking pair: z and the conditioning-augmentation noise, or z "
        "alone (the pair shares one condition sample, so the variety must come from z)",
        argparse={"choices": ("z-and-condition", "z")})
    d_warmup_steps: int = _option(
        0, "first steps of the run that train the discriminators alone (the generator is not updated): a "
        "fine-tune from a checkpoint saved without discriminators starts them untrained, and until they have "
        "caught up their gradients only disturb the generator (counted from 0 across resumes)")
    train_branches: tuple[int, ...] | None = _option(
        None, "comma-separated scale indices to train (0 = base); the others stay frozen [the variant's default]",
        argparse={"type": lambda text: tuple(int(x) for x in text.split(","))})
    diff_augment: str = _option("", "DiffAugment policies before the discriminators, e.g. color,translation,cutout ('' = off)")
    ema_decay: float = _option(0.999, "decay of the generator weight average that is saved")
    lr_decay_epochs: int | None = _option(None, "halve learning rates every N epochs [the variant's default: v1 20, v2 off]")
    seed: int = _option(0, "random seed of initialisation, data order and noise")
    device: str | None = _option(None, "cuda, cuda:1, cpu ... (default: CUDA when present)")
    precision: str = _option("float32", "arithmetic of the training step: float32, or bf16 autocast (CUDA)",
                             argparse={"choices": ("float32", "bf16")})
    channels_last: bool = _option(False, "keep images and convolutions in channels-last memory order (faster on GPUs)")
    sample_every: int = _option(500, "write a sample grid every N steps (0 = only at the end)", "logging and checkpoints")
    checkpoint_every: int = _option(500, "save checkpoint and training state every N steps", "logging and checkpoints")
    checkpoint_seconds: float = _option(
        0.0, "also save whenever this many seconds passed since the last save (0 = off)", "logging and checkpoints")
    log_every: int = _option(10, "append losses to losses.jsonl every N steps", "logging and checkpoints")
    init_from: Path | None = _option(
        None, "fine-tune from this checkpoint folder (architecture must match; branches may grow)", "data and output")
    text_encoder: Path | None = _option(
        None, "local transformers folder (default: packaged all-MiniLM-L6-v2; unused with a bundle)", "data and output")
    sample_captions: list[str] | None = _option(
        None, "caption for the sample grid (repeatable)", "logging and checkpoints", flag="--sample-caption",
        argparse={"action": "append"})
    weights_dtype: str = _option("float32", "dtype of the saved inference weights", "logging and checkpoints",
                                 argparse={"choices": ("float32", "float16", "bfloat16")})
    resume: bool = _option(True, "ignore a training state in --output", "data and output", flag="--no-resume")
    progress: bool = _option(True, "no progress bar", "logging and checkpoints", flag="--quiet")

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None:
            raise ValueError("give --steps or --epochs")
        if self.batch_size < 2:
            raise ValueError("batch size must be at least 2 (batch norm needs two samples)")
        if self.weights_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError("weights dtype must be float32, float16 or bfloat16")
        if self.precision not in ("float32", "bf16"):
            raise ValueError("precision must be float32 or bf16")
        if self.mode_seeking_on not in ("z-and-condition", "z"):
            raise ValueError("--mode-seeking-on must be z-and-condition or z")
        for name in ("matching_weight", "mode_seeking_weight", "kl_weight", "colour_weight", "checkpoint_seconds",
                     "d_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} cannot be negative")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError("--time-budget must be a positive number of seconds")
        if self.train_branches is not None:
            bad = [i for i in self.train_branches if not 0 <= i < self.config.branches]
            if bad or not self.train_branches:
                raise ValueError(f"train branches must be scale indices 0..{self.config.branches - 1}, got {self.train_branches}")
        parse_policy(self.diff_augment)

    def phase_options(self) -> dict[str, Any]:
        """The settings that describe this training phase in the lineage (``TrainingPhase.options``)."""
        return {"diff_augment": list(parse_policy(self.diff_augment)), "mode_seeking_weight": self.mode_seeking_weight,
                "mode_seeking_on": self.mode_seeking_on,
                "colour_weight": self.colour_weight, "kl_weight": self.kl_weight, "lr_g": self.lr_g, "lr_d": self.lr_d,
                "precision": self.precision, "d_warmup_steps": self.d_warmup_steps}


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
    """Owns the networks, optimisers and the loop; ``run`` trains until the step or time budget is spent."""

    def __init__(self, options: TrainingOptions, item_filter: Callable[[ManifestItem], str | None] | None = None):
        self.options = options
        self.config = options.config
        self.spec = self.config.spec
        self.device = torch.device(options.device) if options.device else default_device()
        if self.device.type == "cuda":
            # TF32 matmuls and convolutions: the speed of bf16 inputs at float32 range, on Ampere and later.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.autocast_dtype = torch.bfloat16 if options.precision == "bf16" else None
        self.memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        self.output = Path(options.output)
        self.output.mkdir(parents=True, exist_ok=True)
        random.seed(options.seed)
        torch.manual_seed(options.seed)
        self.bundle = is_bundle(options.data)
        self.encoder = self._caption_encoder() if self.config.conditional else None
        if self.encoder is not None and self.encoder.dim != self.config.text_dim:
            raise ValueError(f"the text encoder gives {self.encoder.dim}-d embeddings; config says {self.config.text_dim}")
        items = read_manifest(options.data)
        embeddings = None
        if self.bundle and self.encoder is not None:
            embeddings = self.encoder.embeddings()
        elif self.encoder is not None:
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
            self.matcher, self.matcher_sha256 = fit_matching_encoder(
                self.dataset, embeddings, self.encoder.fingerprint, Path(options.data) / ".cache",
                seed=options.seed, epochs=options.matching_epochs)
            self.matcher = self.matcher.to(self.device)

        self.generator = build_generator(self.config).to(self.device, memory_format=self.memory_format)
        self.discriminators = build_discriminators(self.config).to(self.device, memory_format=self.memory_format)
        init_weights(self.generator)
        init_weights(self.discriminators)
        self.trained_scales = (sorted(set(options.train_branches)) if options.train_branches is not None
                               else self.spec.default_trained_scales(self.config.branches))
        if options.train_branches is not None:
            # The scales not trained keep their weights: a new branch over frozen lower stages costs no
            # backward pass through them, and what the lower stages learned cannot be undone.
            for index in range(self.config.branches):
                if index not in self.trained_scales:
                    for module in self.generator.branch_modules(index):
                        module.requires_grad_(False)
        # Scales above the highest trained one need not be computed while training.
        self.forward_branches = self.trained_scales[-1] + 1
        self.lr_decay_epochs = (options.lr_decay_epochs if options.lr_decay_epochs is not None
                                else self.spec.lr_decay_epochs)
        self.step = 0
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.parent_lineage = Lineage()
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
    def _caption_encoder(self) -> Any:
        """A bundle's cached embeddings (the text encoder is never loaded), or the text encoder."""
        if self.bundle:
            return BundleTextEncoder(self.options.data)
        from generator.text_encoder import TextEncoder

        return TextEncoder(self.options.text_encoder, device=self.device)

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

        fresh = load_matching(self.generator, load_file(str(folder / ckpt.WEIGHTS_FILE)))
        if (folder / ckpt.LINEAGE_FILE).is_file():
            try:
                self.parent_lineage = read_lineage(folder)
            except LineageError as exc:
                raise ckpt.CheckpointError(f"cannot fine-tune from {folder}: its lineage does not parse ({exc})") from exc
        if fresh:
            logger.info("fine-tuning from %s; %d tensors start fresh (new branches)", folder, len(fresh))
        d_weights = ckpt.discriminator_weights(folder)
        if d_weights:
            load_matching(self.discriminators, d_weights)

    def _resume(self) -> None:
        state = ckpt.restore_training_run(self.output, self.config, self.modules(), self.opt_g, self.opt_d)
        if state is not None:
            self.step, self.started_at = state.step, state.started_at or self.started_at
            logger.info("resumed %s at step %d", self.output, self.step)

    def modules(self) -> dict[str, nn.Module]:
        """The networks of the training state, by the prefix their tensors are saved under."""
        return {"generator": self.generator, "ema": self.ema, "discriminators": self.discriminators}

    # -- the loop -----------------------------------------------------------------------------
    def batches(self) -> Iterator[dict[str, Any]]:
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=True,
                            pin_memory=self.device.type == "cuda")
        while True:
            yield from loader

    def learning_rate_factor(self) -> float:
        if not self.lr_decay_epochs:
            return 1.0
        epoch = self.step // self.steps_per_epoch
        return 0.5 ** (epoch // self.lr_decay_epochs)

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        options = self.options
        real = [img.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
                for img in batch["images"]]
        batch_size = real[0].size(0)
        text = batch["embedding"].to(self.device) if self.config.conditional else None
        # The mode-seeking term needs a second image for some captions: the first half of the batch again,
        # with other latents, in the same forward pass.
        pairs = batch_size // 2 if options.mode_seeking_weight > 0 and text is not None else 0
        z = torch.randn(batch_size + pairs, self.config.z_dim, device=self.device)
        g_text = torch.cat([text, text[:pairs]]) if pairs else text
        # With the condition shared, a pair differs in z alone: the conditioning noise can no longer supply
        # the variety the term asks for, so z has to (the shipped model's seeds differed almost only
        # through that noise, which costs caption fidelity).
        ca_noise = None
        if pairs and options.mode_seeking_on == "z":
            noise = torch.randn(batch_size, self.config.cond_dim, device=self.device)
            ca_noise = torch.cat([noise, noise[:pairs]])
        warming_up = self.step < options.d_warmup_steps
        with self._autocast(), torch.set_grad_enabled(not warming_up):
            if self.forward_branches < self.config.branches:
                all_fakes, mu, logvar = self.generator(z, g_text, ca_noise=ca_noise, branches=self.forward_branches)
            else:
                all_fakes, mu, logvar = self.generator(z, g_text, ca_noise=ca_noise)
        all_fakes = [f.float() for f in all_fakes]
        fakes = [f[:batch_size] for f in all_fakes]
        if mu is not None:
            mu, logvar = mu[:batch_size].float(), logvar[:batch_size].float()
        mu_wrong = None
        if self.config.conditional:
            with torch.no_grad(), self._autocast():
                mu_wrong = self.generator.condition_encoder.encode(batch["wrong_embedding"].to(self.device))[0].float()
        for group in self.opt_g.param_groups:
            group["lr"] = options.lr_g * self.learning_rate_factor()

        losses: dict[str, float] = {}
        cond = mu.detach() if mu is not None else None
        for opt, i in zip(self.opt_d, self.trained_scales):
            disc = self.discriminators[i]
            for group in opt.param_groups:
                group["lr"] = options.lr_d * self.learning_rate_factor()
            with self._autocast():
                real_seen = diff_augment(real[i], self.augment_policy)
                real_out = disc(real_seen, cond)
                wrong_out = disc(real_seen, mu_wrong) if mu_wrong is not None else (None, None)
                fake_out = disc(diff_augment(fakes[i].detach(), self.augment_policy), cond)
            loss_d = discriminator_loss(_float(real_out), _float(wrong_out), _float(fake_out), options.uncond_weight)
            opt.zero_grad(set_to_none=True)
            loss_d.backward()
            opt.step()
            losses[f"loss_d{self.config.image_sizes[i]}"] = loss_d.item()
        if warming_up:
            return losses

        loss_g = torch.zeros((), device=self.device)
        for i in self.trained_scales:
            with self._autocast():
                judged = self.discriminators[i](diff_augment(fakes[i], self.augment_policy), mu)
            loss_g = loss_g + generator_adversarial_loss(_float(judged), options.uncond_weight)
        losses["loss_g_adv"] = loss_g.item()
        if self.matcher is not None:
            # On the largest trained scale: its gradient reaches every trained stage below it.
            with self._autocast():
                vectors = self.matcher(fakes[self.trained_scales[-1]])
            matching = symmetric_info_nce(vectors.float(), text, TEMPERATURE)
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
        if options.colour_weight > 0 and self.spec.colour_consistency:
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

    def run(self) -> Path:
        from tqdm import tqdm

        self._install_signal_handlers()
        log = (self.output / "losses.jsonl").open("a")
        batches = self.batches()
        self.generator.train()
        self.discriminators.train()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.options.progress, unit="step")
        started = last_save = time.perf_counter()
        budget = self.options.time_budget
        try:
            while self.step < self.total_steps and not self._stop_requested:
                if budget is not None and time.perf_counter() - started >= budget:
                    logger.info("time budget of %.0f s spent at step %d", budget, self.step)
                    break
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
                by_seconds = (self.options.checkpoint_seconds
                              and time.perf_counter() - last_save >= self.options.checkpoint_seconds)
                if by_seconds or (self.options.checkpoint_every and self.step % self.options.checkpoint_every == 0):
                    self.save()
                    last_save = time.perf_counter()
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
            rows.extend(tensor_to_pil(images[-1].float()))
        grid = make_grid(rows, columns=len(self.sample_seeds))
        path = self.output / "samples" / f"step-{self.step:07d}.png"
        path.parent.mkdir(exist_ok=True)
        grid.save(path)
        grid.save(self.output / "samples.png")
        (self.output / "samples.json").write_text(json.dumps({"step": self.step, "rows": captions, "seeds": self.sample_seeds}, indent=2))
        return path

    def dataset_record(self) -> DatasetRecord:
        report = self.dataset.report
        name = Path(self.options.data).resolve().name
        if self.bundle:
            name = str(self.encoder.info.get("source") or name) if self.encoder is not None else name
        return DatasetRecord(
            name=name,
            manifest_sha256=manifest_sha256(self.options.data),
            items_used=report.used,
            licences=dict(report.licences),
            attributions=tuple(sorted({i.attribution for i in self.dataset.items if i.attribution})[:1000]),
            items_skipped=len(report.skipped),
            skipped=tuple(SkippedRecord(s.line, s.image, s.reason) for s in report.skipped[:1000]),
        )

    def lineage(self) -> Lineage:
        """What this checkpoint was made from: every dataset and training phase, the ones of the
        checkpoint it was fine-tuned from included, so the data policy sees all of them."""
        dataset = self.dataset_record()
        options = self.options.phase_options()
        options["trained_scales"] = [self.config.image_sizes[i] for i in self.trained_scales]
        if self.matcher is not None:
            options["matching_loss"] = {
                "weight": self.options.matching_weight,
                "encoder": "MatchingImageEncoder trained contrastively on this run's real images",
                "encoder_sha256": self.matcher_sha256,
            }
        if self.bundle:
            options["bundle"] = True
        phase = TrainingPhase(
            run=self.output.name, dataset=dataset.name, sizes=tuple(self.config.image_sizes), steps=self.step,
            batch_size=self.batch_size, epochs=round(self.step / self.steps_per_epoch, 2), device=str(self.device),
            init_from=str(self.options.init_from) if self.options.init_from else None,
            started_at=self.started_at, updated_at=datetime.now(UTC).isoformat(timespec="seconds"), options=options,
        )
        return self.parent_lineage.extended(dataset, phase)

    def save(self) -> Path:
        dtype = getattr(torch, self.options.weights_dtype)
        encoder_info = self.encoder.describe() if self.encoder is not None else None
        ckpt.save_pretrained(self.output, self.config, self.ema.state_dict(), encoder_info, self.lineage(), dtype)
        ckpt.save_training_run(
            self.output, self.config, self.step, self.started_at, self.modules(), self.opt_g, self.opt_d,
            {k: str(v) for k, v in dataclasses.asdict(self.options).items()},
        )
        return self.output


def _float(logits: tuple[torch.Tensor | None, torch.Tensor | None]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Discriminator logits in float32: the losses are computed outside autocast."""
    return tuple(None if t is None else t.float() for t in logits)  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    """The trainer's command line (built in ``generator.train_cli`` from TrainingOptions)."""
    from generator.train_cli import build_parser as build

    return build()


def options_from_args(args: argparse.Namespace) -> TrainingOptions:
    from generator.train_cli import options_from_args as convert

    return convert(args)


def main(argv: list[str] | None = None) -> int:
    """``python -m generator.train`` and ``stackgan-train``."""
    from generator.train_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
