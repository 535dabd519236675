"""The worker side of generation: the pluggable backend that turns a caption into images, loaded
once per worker process (lazily, in the child: CUDA does not survive a fork)."""

from __future__ import annotations

import logging
import os
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
    def generate(self, caption: str, seeds: list[int]) -> list[RenderedImage]: ...


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
