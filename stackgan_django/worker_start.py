"""Worker start: load and warm the active model when a Celery worker process starts, so that the
first request costs what the others cost instead of waiting for the model to load.

``connect_worker_warm_up()`` (called from the app's ready()) connects ``warm_up_worker`` to Celery's
``worker_process_init``, which runs in every pool process that executes tasks (each prefork child
after the fork, so CUDA is initialised where it is used; the solo pool's single process). The
work runs in a background thread: Celery kills a prefork child that has not reported for
``worker_proc_alive_timeout`` (4 s), and loading takes longer. A task that arrives meanwhile waits
for the load (generation.backend_for holds its lock while loading) instead of loading a second copy.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger(__name__)

_DISPATCH_UID = "stackgan_django.worker_start.warm_up_worker"
_REFUSE_UID = "stackgan_django.worker_start.refuse_development_secret_key"
_started: dict[str, threading.Thread] = {}


def connect_worker_warm_up() -> None:
    """Connect the warm-up to worker_process_init (idempotent)."""
    from celery import signals

    signals.worker_process_init.connect(warm_up_worker, weak=False, dispatch_uid=_DISPATCH_UID)
    # celeryd_init: the `celery worker` command only, before it connects to the broker.
    signals.celeryd_init.connect(refuse_development_secret_key, weak=False, dispatch_uid=_REFUSE_UID)


def refuse_development_secret_key(**_signal_kwargs) -> None:
    """celeryd_init handler: a worker, like every manage.py command and config.wsgi, will not start
    on the published development SECRET_KEY with DEBUG off (stackgan_django.E004). Celery runs no
    system checks that stop it and logs any exception a signal handler raises, so this exits."""
    import sys

    from stackgan_django.checks import check_secret_key

    for error in check_secret_key():
        sys.stderr.write(f"The worker refuses to start: {error.msg} ({error.id}). {error.hint}\n")
        raise SystemExit(2)


def warm_up_worker(**_signal_kwargs) -> threading.Thread | None:
    """worker_process_init handler: start warming the active model in a background thread
    (unless STACKGAN["WARM_UP_WORKER"] is off)."""
    from stackgan_django.conf import app_settings

    if not app_settings.WARM_UP_WORKER:
        return None
    thread = threading.Thread(target=warm_up_active_model, name="stackgan-warm-up", daemon=True)
    _started["thread"] = thread
    thread.start()
    return thread


def wait_for_warm_up(timeout: float | None = None) -> bool:
    """Block until this process's warm-up thread has finished; False if none ran or it is still running."""
    thread = _started.get("thread")
    if thread is None:
        return False
    thread.join(timeout)
    return not thread.is_alive()


def warm_up_active_model() -> dict[str, float] | None:
    """Load the active model version's backend, run it once, and prepare the governance parts
    (policies, near-copy index, signer, C2PA contexts). Returns the seconds each part took, or
    None when there is nothing to warm (no active model). Never raises: a worker that cannot warm
    up still starts, and its first request reports any real problem the usual way."""
    from django.db import connection

    from stackgan_django import services
    from stackgan_django.generation import backend_for

    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        try:
            model_version = _active_model_version()
        except services.NoActiveModel:
            logger.warning("worker warm-up: no active model version; the first request will load it")
            return None
        backend = backend_for(model_version)
        timings["load"] = time.perf_counter() - started
        started = time.perf_counter()
        warm_up = getattr(backend, "warm_up", None)
        if callable(warm_up):
            warm_up()
        else:  # any GeneratorBackend: one image primes the same code paths
            backend.generate("a warm-up caption", [0])
        timings["generator"] = time.perf_counter() - started
        started = time.perf_counter()
        _warm_governance(model_version)
        timings["governance"] = time.perf_counter() - started
        logger.info("worker warm-up done for %s: %s", model_version.name, {k: round(v, 2) for k, v in timings.items()})
        return timings
    except Exception:
        logger.exception("worker warm-up failed; requests will load the model when they need it")
        return None
    finally:
        connection.close()  # this thread's own database connection


def _active_model_version(attempts: int = 3):
    """The active model version, read on this thread's own connection, which it opens. Opening a
    connection can fail once for reasons that are gone a moment later (a database restarting, a
    socket error while connecting: "Bad file descriptor" was seen in CI); the warm-up tries again on
    a fresh connection rather than leaving the first request to load the model."""
    from django.db import Error as DatabaseError
    from django.db import connection

    from stackgan_django import services

    for attempt in range(attempts):
        try:
            return services.active_model_version()
        except (DatabaseError, OSError):
            if attempt == attempts - 1:
                raise
            logger.warning("worker warm-up: reading the active model failed; trying again", exc_info=True)
            connection.close()
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _warm_governance(model_version, size: int | None = None) -> None:
    """What the first stamped image would otherwise set up: policy files, the training-image index,
    the signer, the C2PA contexts, the PNG and JPEG encoders. A throwaway image of the model's
    output size is checked, watermarked, signed and verified, then dropped (nothing is stored)."""
    from types import SimpleNamespace

    from PIL import Image

    from stackgan_django import provenance
    from stackgan_django.governance import current_policies

    loader = near_copy_index_loader()
    near_copies = loader(model_version) if loader is not None else None
    size = size or _output_size(model_version)
    # A dull colour (colourfulness 40, under policies.near_copy.LUMINANCE_MAX_COLOURFULNESS): the
    # near-copy check then sets up its search in grey too (the luma thumbnails and their window
    # spreads), not only the colour search.
    image = Image.new("RGB", (size, size), (200, 180, 160))
    policies = current_policies()
    policies.output.check_image(image, near_copies)
    signer = provenance.get_signer()
    if signer.problems():
        return  # the first request reports the signer's problem to the operator, as it always has
    request = SimpleNamespace(caption="worker warm-up", public_id="warm-up", requested_by_id=None, purpose="warm-up",
                              policy_version=policies.version)
    # Through the worker's own stamping: this file gets the full validation after signing, so the
    # first request's files already take the quick check (provenance.stamp_image).
    provenance.stamp_image(image, mark_id=1, model_version=model_version, request=request, decisions=[])


def near_copy_index_loader():
    """The worker's own loader of a model's training-image index (the services' once the workflow
    package has it, the task module's before), so the warm-up reads it exactly as requests will."""
    from stackgan_django import services

    loader = getattr(services, "near_copy_index", None)
    if loader is None:
        from stackgan_django import tasks

        loader = getattr(tasks, "_near_copy_index", None)
    return loader


def _output_size(model_version) -> int:
    from pathlib import Path

    from generator.checkpoint import CheckpointError, read_config

    try:
        return read_config(Path(model_version.checkpoint_path))[0].output_size
    except (CheckpointError, OSError, ValueError):
        return 256
