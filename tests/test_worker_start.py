"""Worker start warm-up (stackgan_django.worker_start) and the optimised backend
(stackgan_django.fast_backend): the model is loaded and run before the first request, through
Celery's real worker_process_init signal, and batched requests get what each would get alone."""

from __future__ import annotations

import numpy as np
import pytest

from stackgan_django import generation, services, worker_start
from stackgan_django.fast_backend import OptimisedPipelineBackend

BACKEND = "stackgan_django.fast_backend.OptimisedPipelineBackend"


@pytest.fixture
def optimised_backend_setting(settings):
    settings.STACKGAN = {**getattr(settings, "STACKGAN", {}), "GENERATOR_BACKEND": BACKEND, "DEVICE": "cpu"}
    generation._backends.clear()
    yield
    generation._backends.clear()


@pytest.fixture
def committed_model(transactional_db, tiny_checkpoint):
    """An active model version committed to the database, so a warm-up thread (its own connection) sees it."""
    return services.register_model_version("tiny-warm", tiny_checkpoint, activate=True)


def test_worker_process_init_loads_and_warms_the_active_model(committed_model, optimised_backend_setting):
    from celery import signals

    worker_start.connect_worker_warm_up()
    worker_start.connect_worker_warm_up()  # connecting twice must not warm up twice
    try:
        receivers = signals.worker_process_init.send(sender="test-worker")
        assert len([r for r, _ in receivers if r is worker_start.warm_up_worker]) == 1
        assert worker_start.wait_for_warm_up(timeout=300)
    finally:
        signals.worker_process_init.disconnect(dispatch_uid=worker_start._DISPATCH_UID)
    key = (committed_model.pk, committed_model.checkpoint_sha256)
    backend = generation._backends[key]
    assert isinstance(backend, OptimisedPipelineBackend) and backend.warm
    # The first request finds the warmed backend: nothing is loaded again.
    assert generation.backend_for(committed_model) is backend


def test_warm_up_without_an_active_model_does_nothing_and_raises_nothing(transactional_db, optimised_backend_setting):
    assert worker_start.warm_up_active_model() is None
    assert generation._backends == {}


def test_warm_up_reports_a_broken_backend_without_raising(committed_model, settings, caplog):
    settings.STACKGAN = {**getattr(settings, "STACKGAN", {}), "TEXT_ENCODER_PATH": "/nonexistent/encoder"}
    generation._backends.clear()
    try:
        assert worker_start.warm_up_active_model() is None
    finally:
        generation._backends.clear()
    assert "worker warm-up failed" in caplog.text


def test_the_optimised_backend_batches_requests_and_matches_one_by_one(db, active_model, optimised_backend_setting):
    backend = generation.backend_for(active_model)
    requests = [("a red apple", [1, 2]), ("a smiling sun", [3]), ("a blue bird", [4, 5, 6])]
    batched = backend.generate_many(requests)
    assert [[item.seed for item in per] for per in batched] == [[1, 2], [3], [4, 5, 6]]
    for (caption, seeds), per in zip(requests, batched):
        for alone, together in zip(backend.generate(caption, seeds), per, strict=True):
            difference = np.abs(np.asarray(alone.image, dtype=int) - np.asarray(together.image, dtype=int)).max()
            assert difference <= 1


def test_a_worker_told_not_to_warm_up_loads_nothing_at_start(committed_model, optimised_backend_setting, settings):
    settings.STACKGAN = {**settings.STACKGAN, "WARM_UP_WORKER": False}
    assert worker_start.warm_up_worker() is None
    assert generation._backends == {}


def test_warm_up_tries_again_after_a_transient_database_error(committed_model, optimised_backend_setting,
                                                             monkeypatch):
    """Opening the warm-up thread's connection once failed in CI with "Bad file descriptor" (a
    socket error while connecting, which cannot be produced on demand, hence the stand-in): the
    warm-up tries again on a fresh connection instead of leaving the first request to load the model."""
    from django.db import OperationalError

    real = services.active_model_version
    failures = [OSError(9, "Bad file descriptor"), OperationalError("the database system is starting up")]

    def flaky():
        if failures:
            raise failures.pop(0)
        return real()

    monkeypatch.setattr(services, "active_model_version", flaky)
    timings = worker_start.warm_up_active_model()
    assert timings is not None and failures == []
    assert generation._backends[(committed_model.pk, committed_model.checkpoint_sha256)].warm
