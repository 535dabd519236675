"""Celery tasks. They take primary keys, and the services decide every state change."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from celery import shared_task

from stackgan_django import services
from stackgan_django.conf import app_settings
from stackgan_django.generation import backend_for
from stackgan_django.governance import current_policies
from stackgan_django.provenance import SigningUnavailable

logger = logging.getLogger(__name__)


def _near_copy_index(model_version):
    """The training-image hash index shipped with the checkpoint, if it has one."""
    import json

    from policies import NearCopyIndex

    path = Path(model_version.checkpoint_path) / "near_copies.json"
    if not path.is_file():
        return None
    return NearCopyIndex.from_json(json.loads(path.read_text()))


@shared_task(name="stackgan_django.generate", ignore_result=True)
def generate(request_id: int) -> str:
    """Generate the images of one request. Safe to run twice: the services make it idempotent."""
    try:
        request = services.start_request(request_id)
    except services.UnknownRequest as exc:
        logger.error("%s Dropping the message.", exc)
        return "unknown"
    if request is None:
        logger.info("request %s needs no work (already done or running elsewhere)", request_id)
        return "skipped"
    try:
        backend = backend_for(request.model_version)
        seeds = [(request.seed + i) % app_settings.MAX_SEED for i in range(request.num_images)]
        started = time.perf_counter()
        rendered = backend.generate(request.caption, seeds)
        compute_seconds = time.perf_counter() - started
        policies = current_policies()
        near_copies = _near_copy_index(request.model_version)
        outputs = [
            services.GeneratedOutput(index, item.seed, item.image, policies.output.check_image(item.image, near_copies))
            for index, item in enumerate(rendered)
        ]
        for output in outputs:
            if not output.verdict.denied:
                services.stamp_output(request, output)
        services.finish_request(request.pk, outputs, compute_seconds)
        return "done"
    except SigningUnavailable as exc:
        logger.warning("request %s: signing pending (%s); it will run again", request_id, exc)
        services.defer_request(request.pk, str(exc))
        return "signing pending"
    except Exception as exc:  # every failure leaves the row retryable, never half-written
        logger.exception("request %s failed", request_id)
        services.fail_request(request.pk, f"{type(exc).__name__}: {exc}")
        return "failed"
