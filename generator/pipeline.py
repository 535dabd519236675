"""Inference: raw captions in, PIL images out, from a checkpoint folder."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from generator.checkpoint import WEIGHTS_FILE, CheckpointError, checkpoint_sha256, load_weights_into, read_config
from generator.config import StackGANConfig
from generator.models import build_generator
from generator.text_encoder import TextEncoder

logger = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> list of RGB PIL images."""
    array = ((images.detach().float().cpu() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)
    return [Image.fromarray(np.ascontiguousarray(img.permute(1, 2, 0).numpy()), "RGB") for img in array]


@dataclass
class GeneratedImage:
    image: Image.Image
    caption: str
    seed: int
    size: int
    caption_index: int
    sample_index: int


@dataclass
class PipelineOutput:
    images: list[GeneratedImage]
    """The final (largest) scale, caption-major: every sample of caption 0, then caption 1..."""
    scales: dict[int, list[GeneratedImage]] = field(default_factory=dict)
    """Every scale by its size, filled when ``return_all_scales`` is set."""


def validate_captions(captions: Any) -> list[str]:
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise ValueError("captions must be a list of strings")
    if not captions:
        raise ValueError("captions must not be empty")
    cleaned = []
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise ValueError(f"caption {index} is {type(caption).__name__}, not a string")
        if not caption.strip():
            raise ValueError(f"caption {index} is empty")
        cleaned.append(caption.strip())
    return cleaned


class StackGANPipeline:
    """Generator + text encoder on one device. Call it with captions to get images."""

    def __init__(
        self,
        generator_model: torch.nn.Module,
        config: StackGANConfig,
        text_encoder: TextEncoder | None,
        device: torch.device,
        info: dict[str, Any] | None = None,
    ):
        self.generator = generator_model.to(device).eval()
        self.config = config
        self.text_encoder = text_encoder
        self.device = device
        self.info = info or {}

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        device: str | torch.device | None = None,
        text_encoder: TextEncoder | str | os.PathLike | None = None,
        check_encoder: bool = True,
    ) -> StackGANPipeline:
        """Load a checkpoint folder. The text encoder defaults to the packaged all-MiniLM-L6-v2.

        With ``check_encoder`` the encoder's fingerprint must equal the one the model was trained
        with: a different encoder gives embeddings the generator has never seen.
        """
        folder = Path(folder)
        device = torch.device(device) if device is not None else default_device()
        config, raw = read_config(folder)
        model = build_generator(config)
        load_weights_into(model, folder / WEIGHTS_FILE)
        encoder = None
        if config.conditional:
            # Anything with encode/dim/fingerprint serves (a training bundle's cached embeddings, for one).
            encoder = (text_encoder if text_encoder is not None and not isinstance(text_encoder, str | os.PathLike)
                       else TextEncoder(text_encoder, device=device))
            expected = raw.get("text_encoder") or {}
            if encoder.dim != config.text_dim:
                raise CheckpointError(
                    f"text encoder at {encoder.path} gives {encoder.dim}-d embeddings, the model expects {config.text_dim}"
                )
            if check_encoder and expected.get("sha256") and expected["sha256"] != encoder.fingerprint:
                raise CheckpointError(
                    f"text encoder at {encoder.path} is not the one {folder} was trained with "
                    f"({expected.get('name')}, sha256 {expected['sha256'][:12]}...)"
                )
        info = {"folder": str(folder), "sha256": checkpoint_sha256(folder), "config": raw}
        return cls(model, config, encoder, device, info)

    def draw_seeds(self, count: int, generator: torch.Generator | None) -> list[int]:
        if generator is None:
            return [secrets.randbelow(MAX_SEED) for _ in range(count)]
        return torch.randint(0, MAX_SEED, (count,), generator=generator, dtype=torch.int64).tolist()

    def noise_for_seed(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """z and CA noise for one image. Drawn on the CPU, so a seed means the same noise anywhere."""
        rng = torch.Generator(device="cpu").manual_seed(int(seed))
        z = torch.randn(self.config.z_dim, generator=rng)
        ca_noise = torch.randn(self.config.cond_dim, generator=rng)
        return z, ca_noise

    @torch.inference_mode()
    def __call__(
        self,
        captions: Sequence[str],
        num_images_per_caption: int = 1,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
        return_all_scales: bool = False,
        batch_size: int = 16,
    ) -> PipelineOutput:
        captions = validate_captions(captions)
        if not isinstance(num_images_per_caption, int) or num_images_per_caption < 1:
            raise ValueError("num_images_per_caption must be a positive integer")
        total = len(captions) * num_images_per_caption
        if seeds is None:
            seeds = self.draw_seeds(total, generator)
        elif len(seeds) != total:
            raise ValueError(f"expected {total} seeds (captions x images per caption), got {len(seeds)}")
        jobs = [(ci, si) for ci in range(len(captions)) for si in range(num_images_per_caption)]
        embeddings = self._embed(captions)
        scales: dict[int, list[GeneratedImage]] = {size: [] for size in self.config.image_sizes}
        for start in range(0, total, batch_size):
            chunk = list(range(start, min(start + batch_size, total)))
            noise = [self.noise_for_seed(seeds[i]) for i in chunk]
            z = torch.stack([n[0] for n in noise]).to(self.device)
            ca_noise = torch.stack([n[1] for n in noise]).to(self.device)
            text = embeddings[[jobs[i][0] for i in chunk]].to(self.device) if embeddings is not None else None
            images, _, _ = self.generator(z, text, ca_noise)
            for size, batch in zip(self.config.image_sizes, images):
                if size != self.config.output_size and not return_all_scales:
                    continue
                for i, pil in zip(chunk, tensor_to_pil(batch)):
                    ci, si = jobs[i]
                    scales[size].append(GeneratedImage(pil, captions[ci], int(seeds[i]), size, ci, si))
        final = scales[self.config.output_size]
        return PipelineOutput(images=final, scales=scales if return_all_scales else {})

    def _embed(self, captions: list[str]) -> torch.Tensor | None:
        if self.text_encoder is None:
            return None
        return self.text_encoder.encode(captions)
