"""Inference: raw captions in, PIL images out, from a checkpoint folder."""

from __future__ import annotations

import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from generator.checkpoint import WEIGHTS_FILE, CheckpointError, checkpoint_sha256, load_weights_into, read_config
from generator.config import StackGANConfig
from generator.fast_inference import InferenceOptions, OptimisationReport, optimize_generator
from generator.models import build_generator
from generator.text_encoder import TextEncoder

logger = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1
EMBEDDING_CACHE_SIZE = 512
# A few captions are encoded on one CPU thread: the sentence encoder is hundreds of tiny operations,
# and with several threads each waits at a barrier for the others. On the project's shared 2-core
# machines one caption took 0.3-1.5 s with two threads and 25-80 ms with one.
SMALL_ENCODE = 16


@contextmanager
def _one_thread_for_small_work(enabled: bool) -> Iterator[None]:
    if not enabled or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


@dataclass(frozen=True)
class GenerationJob:
    """One caption and the seeds of its images: what one waiting request asks for."""

    caption: str
    seeds: tuple[int, ...]

    def __init__(self, caption: str, seeds: Sequence[int]):
        object.__setattr__(self, "caption", caption)
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))


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
    """Generator + text encoder on one device. Call it with captions to get images.

    With ``inference`` (an InferenceOptions, or True for the defaults) the generator is replaced by
    its optimised equivalent (generator.fast_inference): batch norm folded, phase up-sampling,
    the constant condition folded, channels-last, half precision on CUDA, torch.compile if asked.
    The optimised module is checked against the eager one once, at load.
    """

    def __init__(
        self,
        generator_model: torch.nn.Module,
        config: StackGANConfig,
        text_encoder: TextEncoder | None,
        device: torch.device,
        info: dict[str, Any] | None = None,
        inference: InferenceOptions | bool | None = None,
    ):
        self.generator = generator_model.to(device).eval()
        self.config = config
        self.text_encoder = text_encoder
        self.device = device
        self.info = info or {}
        self.optimisation: OptimisationReport | None = None
        self._embedding_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        if inference:
            options = InferenceOptions() if inference is True else inference
            self.generator, self.optimisation = optimize_generator(self.generator, options, self._example_inputs(2))

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        device: str | torch.device | None = None,
        text_encoder: TextEncoder | str | os.PathLike | None = None,
        check_encoder: bool = True,
        inference: InferenceOptions | bool | None = None,
    ) -> StackGANPipeline:
        """Load a checkpoint folder. The text encoder defaults to the packaged all-MiniLM-L6-v2.

        With ``check_encoder`` the encoder's fingerprint must equal the one the model was trained
        with: a different encoder gives embeddings the generator has never seen. ``inference``
        selects the optimised generator (see the class docstring).
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
        return cls(model, config, encoder, device, info, inference=inference)

    def _example_inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Seeded inputs of the generator's shapes, for the load-time check and the warm-up."""
        rng = torch.Generator(device="cpu").manual_seed(0)
        z = torch.randn(batch, self.config.z_dim, generator=rng)
        ca_noise = torch.randn(batch, self.config.cond_dim, generator=rng)
        # Sentence embeddings are unit vectors; random ones of that norm exercise the same range.
        text = torch.nn.functional.normalize(torch.randn(batch, self.config.text_dim, generator=rng), dim=1)
        return z.to(self.device), (text.to(self.device) if self.config.conditional else None), ca_noise.to(self.device)

    @torch.inference_mode()
    def warm_up(self, batch_sizes: Sequence[int] = (1,), caption: str = "a warm-up caption") -> None:
        """Run every part once (text encoder, generator per batch size, image conversion), so that
        lazy initialisation and torch.compile happen now, not on a user's first request."""
        for batch in batch_sizes:
            self.generate_jobs([GenerationJob(caption, range(batch))], batch_size=batch)

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
        jobs = [GenerationJob(caption, seeds[ci * num_images_per_caption:(ci + 1) * num_images_per_caption])
                for ci, caption in enumerate(captions)]
        scales = self._generate(jobs, batch_size, return_all_scales)
        final = [image for per_job in scales[self.config.output_size] for image in per_job]
        all_scales = {size: [image for per_job in per_size for image in per_job] for size, per_size in scales.items()}
        return PipelineOutput(images=final, scales=all_scales if return_all_scales else {})

    @torch.inference_mode()
    def generate_jobs(self, jobs: Sequence[GenerationJob], batch_size: int = 16) -> list[list[GeneratedImage]]:
        """Several requests' images in shared forward passes of up to ``batch_size`` images.

        Each job's images come back in its own list, in its seed order, and equal (within float
        rounding) what generating that job alone gives: every image depends only on its caption and
        its seed. ``caption_index`` is the job's position in ``jobs``.
        """
        if not jobs:
            return []
        validate_captions([job.caption for job in jobs])
        for index, job in enumerate(jobs):
            if not job.seeds:
                raise ValueError(f"job {index} has no seeds")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError("batch_size must be a positive integer")
        return self._generate([GenerationJob(job.caption.strip(), job.seeds) for job in jobs], batch_size, False)[
            self.config.output_size]

    def _generate(self, jobs: list[GenerationJob], batch_size: int,
                  return_all_scales: bool) -> dict[int, list[list[GeneratedImage]]]:
        """Images per scale, per job. Jobs are flattened to (job, sample) pairs and run in chunks."""
        flat = [(ji, si, seed) for ji, job in enumerate(jobs) for si, seed in enumerate(job.seeds)]
        embeddings = self._embed([job.caption for job in jobs])
        sizes = self.config.image_sizes if return_all_scales else [self.config.output_size]
        scales: dict[int, list[list[GeneratedImage]]] = {size: [[] for _ in jobs] for size in sizes}
        for start in range(0, len(flat), batch_size):
            chunk = flat[start:start + batch_size]
            noise = [self.noise_for_seed(seed) for _, _, seed in chunk]
            z = torch.stack([n[0] for n in noise]).to(self.device)
            ca_noise = torch.stack([n[1] for n in noise]).to(self.device)
            text = embeddings[[ji for ji, _, _ in chunk]].to(self.device) if embeddings is not None else None
            images, _, _ = self.generator(z, text, ca_noise)
            for size, batch in zip(self.config.image_sizes, images):
                if size not in scales:
                    continue
                for (ji, si, seed), pil in zip(chunk, tensor_to_pil(batch)):
                    scales[size][ji].append(GeneratedImage(pil, jobs[ji].caption, int(seed), size, ji, si))
        return scales

    def _embed(self, captions: list[str]) -> torch.Tensor | None:
        """Caption embeddings; the last few hundred captions are kept, since editors ask for new
        seeds of the same caption and a batch often repeats a caption."""
        if self.text_encoder is None:
            return None
        missing = list(dict.fromkeys(c for c in captions if c not in self._embedding_cache))
        if missing:
            with _one_thread_for_small_work(len(missing) <= SMALL_ENCODE and self.device.type == "cpu"):
                encoded = self.text_encoder.encode(missing)
            for caption, vector in zip(missing, encoded):
                self._embedding_cache[caption] = vector.detach().clone()
        for caption in captions:
            self._embedding_cache.move_to_end(caption)
        result = torch.stack([self._embedding_cache[c] for c in captions])
        while len(self._embedding_cache) > EMBEDDING_CACHE_SIZE:
            self._embedding_cache.popitem(last=False)
        return result
