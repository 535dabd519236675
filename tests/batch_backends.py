"""A generator backend for the batching tests: the real optimised backend, with every forward pass
(each ``generate_jobs`` call of its pipeline) recorded, a gate that can hold the generator while a
test queues more requests, and a hook run inside the pass (where a test makes another worker take a
request over). The worker under test runs in this process (a thread), so class attributes are shared."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from stackgan_django.fast_backend import OptimisedPipelineBackend

GATE_LIMIT_SECONDS = 120  # never hold for ever, even if a test forgets to open the gate


class CountingPipelineBackend(OptimisedPipelineBackend):
    passes: list[list[tuple[str, int]]] = []
    """One entry per forward pass: (caption, images) of each job in it."""
    gate = threading.Event()
    entered = threading.Event()
    during_pass: Callable[[], Any] | None = None

    @classmethod
    def reset(cls) -> None:
        cls.passes = []
        cls.gate.set()
        cls.entered.clear()
        cls.during_pass = None

    def __init__(self, checkpoint_path: Any):
        super().__init__(checkpoint_path)
        real = self.pipeline.generate_jobs

        def counted(jobs: Sequence[Any], batch_size: int = 16) -> Any:
            total = sum(len(job.seeds) for job in jobs)
            assert batch_size >= total, "a batch is drawn in one forward pass"
            type(self).passes.append([(job.caption, len(job.seeds)) for job in jobs])
            type(self).entered.set()
            type(self).gate.wait(GATE_LIMIT_SECONDS)
            if type(self).during_pass is not None:
                type(self).during_pass()
            return real(jobs, batch_size=batch_size)

        self.pipeline.generate_jobs = counted
