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
from stackgan_django.services.errors import ExplainedFailure

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


class CheckpointChanged(ExplainedFailure, RuntimeError):
    """The files in a model version's folder are not the ones it was registered with."""


def check_checkpoint_unchanged(model_version) -> None:
    """Refuse a model version whose folder now holds other weights or config than it was registered
    (and activated) with: the data policy accepted the lineage recorded then, and every manifest
    names the registered hash. The folder is only a path: a fine-tune run again with FORCE=1, or a
    promotion copying a new model into models/default, replaces the files under a version whose
    record still says otherwise."""
    from generator.checkpoint import CheckpointError, checkpoint_sha256

    folder = Path(model_version.checkpoint_path)
    try:
        found = checkpoint_sha256(folder)
    except (OSError, CheckpointError) as exc:
        logger.error("model version %s: checkpoint folder %s unreadable: %s", model_version.name, folder, exc)
        raise CheckpointChanged(f"The checkpoint of model version {model_version.name!r} cannot be read "
                                f"({type(exc).__name__}); an administrator must restore it.") from exc
    if found != model_version.checkpoint_sha256:
        logger.error("model version %s: %s holds checkpoint %s, registered as %s", model_version.name, folder, found,
                     model_version.checkpoint_sha256)
        raise CheckpointChanged(
            f"The files of model version {model_version.name!r} were replaced after it was registered (checkpoint "
            f"{found[:12]}, registered {model_version.checkpoint_sha256[:12]}), so their training data was never "
            "checked; nothing is drawn with them. An administrator must register them as a new model version "
            "and activate it, or restore the registered files.")


def backend_for(model_version) -> GeneratorBackend:
    """The process's backend for a model version, loaded on first use and kept; only from the files
    it was registered with (check_checkpoint_unchanged)."""
    key = (model_version.pk, model_version.checkpoint_sha256)
    with _lock:
        if key not in _backends:
            _backends.clear()  # one model in memory at a time: a GPU holds one well
            check_checkpoint_unchanged(model_version)
            _backends[key] = app_settings.GENERATOR_BACKEND.load(model_version)
        return _backends[key]
