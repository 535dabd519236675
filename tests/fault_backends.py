"""A generator backend the fault tests can hold mid-task: while the file named by FAULT_HOLD_FILE
exists, generation waits, so a test can kill a worker (or restart a server) with the request
RUNNING, then let it go."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from stackgan_django.generation import PipelineBackend, RenderedImage

HOLD_LIMIT_SECONDS = 300  # never wait for ever, even if a test forgets the file


class HeldPipelineBackend(PipelineBackend):
    def hold(self) -> None:
        hold = os.environ.get("FAULT_HOLD_FILE")
        if hold:
            started = Path(hold + ".started")
            started.write_text(str(os.getpid()))
            deadline = time.monotonic() + HOLD_LIMIT_SECONDS
            while Path(hold).exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    def generate(self, caption: str, seeds: list[int]) -> list[RenderedImage]:
        self.hold()
        return super().generate(caption, seeds)

    def generate_many(self, requests: Sequence[tuple[str, Sequence[int]]],
                      batch_size: int | None = None) -> list[list[RenderedImage]]:
        """Several requests drawn in one pass (batching across requests) are held the same way."""
        self.hold()
        return super().generate_many(requests, batch_size)
