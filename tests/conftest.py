"""Shared fixtures: a tiny real checkpoint, the text encoder, and a real Celery worker."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from generator.config import StackGANConfig
from lineage import DatasetRecord, Lineage, TrainingPhase

TINY_CONFIG = StackGANConfig(ngf=8, ndf=8, base_size=16, branches=3)  # 16/32/64 px, CPU-fast
# The lineage the test checkpoints declare: a rights-clean synthetic set, so activation passes.
SHAPES_LINEAGE = Lineage(
    datasets=(DatasetRecord(name="shapes", manifest_sha256="0" * 64, items_used=16, licences={"CC0-1.0": 16},
                            attributions=()),),
    phases=(TrainingPhase(run="tiny", dataset="shapes", sizes=(16, 32, 64), steps=0),),
)


@pytest.fixture(scope="session")
def text_encoder():
    from generator.text_encoder import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, text_encoder) -> Path:
    """A real StackGAN-v2 checkpoint with random (BN-calibrated) weights."""
    import torch

    from generator.calibration import calibrate_batch_norm
    from generator.checkpoint import save_pretrained
    from generator.models import build_generator, init_weights

    folder = tmp_path_factory.mktemp("tiny-checkpoint")
    torch.manual_seed(0)
    model = build_generator(TINY_CONFIG)
    init_weights(model)
    calibrate_batch_norm(model, TINY_CONFIG, text_encoder)
    return save_pretrained(folder, TINY_CONFIG, model.state_dict(), text_encoder.describe(), SHAPES_LINEAGE.to_dict())


@pytest.fixture
def active_model(db, tiny_checkpoint):
    from stackgan_django import services

    return services.register_model_version("tiny-test", tiny_checkpoint, activate=True)


@pytest.fixture
def no_broker(monkeypatch) -> list[int]:
    """Record what would be enqueued instead of sending it, for tests about the database."""
    from stackgan_django.services import delivery

    sent: list[int] = []
    monkeypatch.setattr(delivery, "enqueue", lambda request_id, countdown=None: sent.append(request_id))
    return sent


@pytest.fixture
def users(db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    model = get_user_model()
    editor = model.objects.create_user("editor", password="pw-editor-1", is_staff=True)
    reviewer = model.objects.create_user("reviewer", password="pw-reviewer-1", is_staff=True)
    reviewer.user_permissions.add(*Permission.objects.filter(codename__in=["review_asset", "view_asset"]))
    editor.user_permissions.add(*Permission.objects.filter(
        codename__in=["add_generationrequest", "view_generationrequest", "view_asset"]))
    return editor, reviewer


@pytest.fixture(autouse=True)
def media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                                                          "OPTIONS": {"location": str(tmp_path / "media")}}}


@pytest.fixture(autouse=True)
def signing_dir(settings, tmp_path_factory):
    """One development CA for the whole test session, made the way a first run makes it."""
    from stackgan_django.provenance import manifests

    folder = tmp_path_factory.getbasetemp() / "signing"
    # Each test's audit anchors in a file of its own: the repository's var/ file names events of
    # other databases, which a test's chain does not hold.
    anchors = tmp_path_factory.mktemp("audit-anchors") / "audit-anchors.jsonl"
    settings.STACKGAN = {**getattr(settings, "STACKGAN", {}), "SIGNER_OPTIONS": {"folder": str(folder)},
                         "AUDIT_ANCHOR_FILE": str(anchors)}
    manifests.reset_cache()
    yield folder
    manifests.reset_cache()


@pytest.fixture
def worker_queue(settings):
    """A queue name of this test alone, so stale messages of earlier runs never reach it."""
    name = f"gpu-test-{uuid.uuid4().hex[:8]}"
    settings.STACKGAN = {**getattr(settings, "STACKGAN", {}), "QUEUE": name}
    return name


@pytest.fixture
def celery_worker(transactional_db, worker_queue):
    """A real Celery worker (thread, solo pool) consuming the configured broker: filesystem by
    default, Redis or RabbitMQ when CELERY_BROKER_URL names one. Never eager mode."""
    import celery.contrib.testing.tasks  # noqa: F401  (registers celery.ping, which start_worker expects)
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun
    from django.db import connections

    from config.celery import app

    def close_connections(**kwargs):
        connections.close_all()  # the worker thread's own connections, so the test DB can be dropped

    task_postrun.connect(close_connections, weak=False)
    app.conf.task_always_eager = False
    with start_worker(app, pool="solo", concurrency=1, queues=[worker_queue], perform_ping_check=False,
                      loglevel="WARNING", shutdown_timeout=30) as worker:
        yield worker
    task_postrun.disconnect(close_connections)


def broker_description() -> str:
    from django.conf import settings

    return settings.CELERY_BROKER_URL.split("://")[0]


def database_description() -> str:
    from django.conf import settings

    return settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- the editor's and reviewer's desks (issue 15) ----------------------------------------------------

@pytest.fixture
def desk_assets(active_model, no_broker):
    """Make assets pending review through the services, without a worker: signed noise images.
    ``desk_assets(user, count, flagged=True)`` gives assets a policy rule flagged for extra review."""
    from PIL import Image

    from policies import Decision, Outcome, Verdict
    from stackgan_django import services

    def make(user, count=1, caption="a red apple with a green leaf", flagged=False):
        request = services.submit_request(caption=caption, num_images=count, user=user)
        services.start_request(request.pk)
        decisions = [Decision(Outcome.REVIEW, "output.test.flag", "A test rule asks for a second look.")] if flagged else []
        outputs = []
        for index in range(count):
            image = Image.effect_noise((64, 64), 50).convert("RGB")
            output = services.GeneratedOutput(index, request.seed + index, image, Verdict("output", "v", decisions))
            outputs.append(services.stamp_output(request, output))
        return services.finish_request(request.pk, outputs, 0.25)

    return make


# -- API v1 / private storage (issue 11) ------------------------------------------------------------

@pytest.fixture(autouse=True)
def private_storage_in_tmp(settings, tmp_path):
    """Each test's generated files in its own private folder (never var/private of the checkout)."""
    settings.STACKGAN = {**getattr(settings, "STACKGAN", {}),
                         "STORAGE": "django.core.files.storage.FileSystemStorage",
                         "STORAGE_OPTIONS": {"location": str(tmp_path / "private")}}
    return tmp_path / "private"


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Throttle counters live in the cache; one test's requests must not count against the next."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api_key_for():
    """make(user, *scopes, expires_at=None) -> an APIClient sending that key, with .api_key / .secret."""
    from django.utils import timezone
    from rest_framework.test import APIClient

    from stackgan_django import services
    from stackgan_django.models import ApiKey

    def make(user, *scopes, expires_at=None, name="test client"):
        # A key is never created expired (create_api_key refuses it): one that has since expired is made
        # by moving its expiry back, as time would.
        ahead = expires_at if expires_at is None or expires_at > timezone.now() else None
        api_key, secret = services.create_api_key(user, name, list(scopes or ApiKey.Scope.values), ahead)
        if ahead is not expires_at:
            ApiKey.objects.filter(pk=api_key.pk).update(expiry_date=expires_at)
            api_key.refresh_from_db()
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
        client.api_key, client.secret = api_key, secret
        return client

    return make
