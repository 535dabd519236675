"""A generator backend the fault tests can hold mid-task: while the file named by FAULT_HOLD_FILE
exists, generation waits, so a test can kill a worker (or restart a server) with the request
RUNNING, then let it go."""

from __future__ import annotations

import os
import time
from pathlib import Path

from stackgan_django.generation import PipelineBackend, RenderedImage

HOLD_LIMIT_SECONDS = 300  # never wait for ever, even if a test forgets the file


class HeldPipelineBackend(PipelineBackend):
    def generate(self, caption: str, seeds: list[int]) -> list[RenderedImage]:
        hold = os.environ.get("FAULT_HOLD_FILE")
        if hold:
            started = Path(hold + ".started")
            started.write_text(str(os.getpid()))
            deadline = time.monotonic() + HOLD_LIMIT_SECONDS
            while Path(hold).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().generate(caption, seeds)
