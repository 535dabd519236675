"""The whole path on real services: submit -> real Celery worker -> assets pending review ->
approve -> audit chain verifies. PostgreSQL and Redis when DATABASE_URL / CELERY_BROKER_URL name
them (CI does), the embedded SQLite and filesystem broker otherwise."""

from __future__ import annotations

import time

import pytest
from PIL import Image

from stackgan_django import services
from stackgan_django.audit import verify_chain
from stackgan_django.models import Asset, AuditEvent, GenerationRequest
from tests.conftest import broker_description, database_description

pytestmark = pytest.mark.integration


def wait_for(request_ids, states=("done", "failed"), timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = dict(GenerationRequest.objects.filter(pk__in=request_ids).values_list("pk", "state"))
        if len(found) == len(request_ids) and all(s in states for s in found.values()):
            return found
        time.sleep(0.2)
    raise AssertionError(f"requests did not finish in {timeout}s: {found}")


def test_whole_path_on_real_services(celery_worker, active_model, users):
    editor, reviewer = users
    print(f"database={database_description()} broker={broker_description()}")
    # A fixed seed: the tiny untrained network's images pass the output policy for it (random seeds
    # sometimes give a too-smooth image, which the policy rightly refuses).
    allowed = services.submit_request(caption="a red apple with a green leaf", num_images=3, seed=12345, user=editor)
    denied = services.submit_request(caption="a n-u-d-e figure", num_images=2, user=editor)
    assert allowed.state == GenerationRequest.State.QUEUED
    assert denied.state == GenerationRequest.State.POLICY_DENIED
    assert denied.decisions.filter(rule_id="usage.blocked.sexual_content", outcome="deny").exists()

    states = wait_for([allowed.pk])
    assert states[allowed.pk] == "done", GenerationRequest.objects.get(pk=allowed.pk).error
    allowed.refresh_from_db()
    assets = list(allowed.assets.order_by("index"))
    refused = list(allowed.decisions.filter(stage="output").values_list("rule_id", flat=True))
    assert [a.index for a in assets] == [0, 1, 2], f"the output policy refused: {refused}"
    assert all(a.state == Asset.State.PENDING_REVIEW for a in assets)
    assert allowed.compute_seconds > 0
    for asset in assets:
        assert asset.seed == allowed.seed + asset.index
        with asset.file.open("rb") as handle:
            image = Image.open(handle)
            assert image.format == "PNG" and image.size == (64, 64)
    # The denied request never reached the worker.
    denied.refresh_from_db()
    assert denied.state == GenerationRequest.State.POLICY_DENIED and not denied.assets.exists()

    services.approve_asset(assets[0].pk, reviewer, note="fine")
    services.reject_asset(assets[1].pk, reviewer, note="blurry")
    assert Asset.objects.get(pk=assets[0].pk).state == Asset.State.APPROVED
    report = verify_chain()
    assert report.ok, str(report)
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    for expected in ("request.queued", "request.denied", "request.started", "request.done",
                     "asset.approved", "asset.rejected"):
        assert expected in actions


def test_running_the_task_twice_never_duplicates_assets(celery_worker, active_model, users):
    from stackgan_django.tasks import generate

    request = services.submit_request(caption="a blue bird on a branch", num_images=2, user=users[0])
    wait_for([request.pk])
    first = sorted(Asset.objects.filter(request=request).values_list("pk", flat=True))
    generate.apply_async(args=[request.pk], queue=services.app_settings.QUEUE)  # a duplicate message
    generate.apply_async(args=[987654321], queue=services.app_settings.QUEUE)  # an unknown id
    time.sleep(2)
    wait_for([request.pk])
    assert sorted(Asset.objects.filter(request=request).values_list("pk", flat=True)) == first
    assert verify_chain().ok
