"""The worker side of generation: the pluggable backend that turns a caption into images, loaded
once per worker process (lazily, in the child: CUDA does not survive a fork)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import Protocol

from PIL import Image

from stackgan_django.conf import app_settings

logger = logging.getLogger(__name__)


@dataclass
class RenderedImage:
    image: Image.Image
    seed: int


class GeneratorBackend(Protocol):
    """What a backend must offer. ``generate_many`` (several requests' images in shared forward
    passes, each request's images in its own list) is optional: ``generate_batch`` falls back to
    one ``generate`` per request for a backend without it."""

    def generate(self, caption: str, seeds: list[int]) -> list[RenderedImage]: ...


def generate_batch(backend: GeneratorBackend, jobs: Sequence[tuple[str, Sequence[int]]]) -> list[list[RenderedImage]]:
    """Several requests' images through ``backend``: in one forward pass when it can
    (``generate_many(jobs, batch_size)``), else one request after another."""
    many = getattr(backend, "generate_many", None)
    if many is None:
        return [backend.generate(caption, list(seeds)) for caption, seeds in jobs]
    return many(jobs, batch_size=max(1, sum(len(seeds) for _, seeds in jobs)))


class PipelineBackend:
    """Runs generator.StackGANPipeline from the model version's checkpoint folder."""

    def __init__(self, checkpoint_path: str | os.PathLike):
        from generator import StackGANPipeline

        self.pipeline = StackGANPipeline.from_pretrained(
            Path(checkpoint_path), device=app_settings.DEVICE, text_encoder=app_settings.TEXT_ENCODER_PATH
        )
        logger.info("loaded generator %s on %s", checkpoint_path, self.pipeline.device)

    @classmethod
    def load(cls, model_version) -> PipelineBackend:
        return cls(model_version.checkpoint_path)

    def generate(self, caption: str, seeds: list[int]) -> list[RenderedImage]:
        output = self.pipeline([caption], num_images_per_caption=len(seeds), seeds=seeds)
        return [RenderedImage(item.image, item.seed) for item in output.images]

    def generate_many(self, requests: Sequence[tuple[str, Sequence[int]]],
                      batch_size: int | None = None) -> list[list[RenderedImage]]:
        """Several requests (caption, seeds) in shared forward passes of ``batch_size`` images (all
        of them in one pass by default); each request's images in its own list, equal within float
        rounding to generating it alone (an image depends only on its caption and seed)."""
        from generator.pipeline import GenerationJob

        jobs = [GenerationJob(caption, seeds) for caption, seeds in requests]
        size = batch_size or max(1, sum(len(job.seeds) for job in jobs))
        results = self.pipeline.generate_jobs(jobs, batch_size=size)
        return [[RenderedImage(item.image, item.seed) for item in per_job] for per_job in results]


_backends: dict[tuple[int, str], GeneratorBackend] = {}
_lock = Lock()


def _forget_after_fork() -> None:
    _backends.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def backend_for(model_version) -> GeneratorBackend:
    """The process's backend for a model version, loaded on first use and kept."""
    key = (model_version.pk, model_version.checkpoint_sha256)
    with _lock:
        if key not in _backends:
            _backends.clear()  # one model in memory at a time: a GPU holds one well
            _backends[key] = app_settings.GENERATOR_BACKEND.load(model_version)
        return _backends[key]
