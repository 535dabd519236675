"""Generator backends that run the optimised generator (generator.fast_inference), can be warmed
at worker start, and generate several waiting requests in shared forward passes.

Choose one by dotted path, no code change:
``STACKGAN = {"GENERATOR_BACKEND": "stackgan_django.fast_backend.OptimisedPipelineBackend"}``
(or ``CompiledPipelineBackend``, which adds torch.compile at worker start).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from threading import Lock

from generator.fast_inference import InferenceOptions
from stackgan_django.conf import app_settings
from stackgan_django.generation import PipelineBackend, RenderedImage

logger = logging.getLogger(__name__)

# Warm-up batch sizes: 1 and 2 are compiled as fixed shapes by torch.compile; the third size makes
# it compile one graph for any larger batch, so no later request compiles anything.
WARM_UP_BATCH_SIZES = (1, 2, 4)


class OptimisedPipelineBackend(PipelineBackend):
    """PipelineBackend with the optimised generator: same images within float rounding, faster."""

    inference_options = InferenceOptions()
    max_batch_size = 16
    """The images per forward pass of ``generate_many`` when the caller names no batch size."""

    def __init__(self, checkpoint_path: str | os.PathLike):
        from generator import StackGANPipeline

        started = time.perf_counter()
        self.pipeline = StackGANPipeline.from_pretrained(
            Path(checkpoint_path), device=app_settings.DEVICE, text_encoder=app_settings.TEXT_ENCODER_PATH,
            inference=self.inference_options,
        )
        # One forward pass at a time: torch.compile's first calls and the caption cache are not
        # meant for two threads (a warm-up thread and a task, say) at once.
        self._lock = Lock()
        self.warm = False
        logger.info("loaded optimised generator %s on %s in %.1f s (%s)", checkpoint_path, self.pipeline.device,
                    time.perf_counter() - started, self.pipeline.optimisation)

    def warm_up(self, batch_sizes: Sequence[int] = WARM_UP_BATCH_SIZES) -> float:
        """Run the whole generation path once per batch size; returns the seconds it took."""
        started = time.perf_counter()
        with self._lock:
            self.pipeline.warm_up(batch_sizes)
            self.warm = True
        seconds = time.perf_counter() - started
        logger.info("generator warm in %.1f s (batch sizes %s)", seconds, list(batch_sizes))
        return seconds

    def generate(self, caption: str, seeds: list[int]) -> list[RenderedImage]:
        return self.generate_many([(caption, seeds)])[0]

    def generate_many(self, requests: Sequence[tuple[str, Sequence[int]]],
                      batch_size: int | None = None) -> list[list[RenderedImage]]:
        """Several waiting requests (caption, seeds) in shared forward passes of ``batch_size``
        images (``max_batch_size`` by default); each request's images in its own list, equal within
        float rounding to generating it alone."""
        from generator.pipeline import GenerationJob

        jobs = [GenerationJob(caption, seeds) for caption, seeds in requests]
        with self._lock:
            results = self.pipeline.generate_jobs(jobs, batch_size=batch_size or self.max_batch_size)
        return [[RenderedImage(item.image, item.seed) for item in per_job] for per_job in results]


class CompiledPipelineBackend(OptimisedPipelineBackend):
    """OptimisedPipelineBackend plus torch.compile. Compiling takes minutes on a CPU, so use it only
    with the worker-start warm-up (stackgan_django.worker_start), which pays that before any request."""

    inference_options = InferenceOptions(compile=True)
