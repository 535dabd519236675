"""Recovery in the workflow itself, in one process: leases and takeover, the attempt limit, fencing
of a worker that lost its lease, the outbox against a broker that is really unreachable, storage
writes that overwrite and clean up after themselves, the check_storage and sweep_requests commands,
and reconnecting after the database server dropped the connection."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from policies import Verdict
from stackgan_django import services
from stackgan_django.audit import verify_chain
from stackgan_django.models import Asset, AuditEvent, GenerationRequest
from tests.faults import UNREACHABLE_BROKER, celery_broker, files_under, wait_until

State = GenerationRequest.State


def fake_signed_output(index: int, payload: bytes = b"signed-png") -> services.GeneratedOutput:
    """An output as stamp_output leaves it; the bytes stand in for a signed PNG (storage is what is tested)."""
    from PIL import Image

    return services.GeneratedOutput(index=index, seed=index, image=Image.new("RGB", (16, 16)),
                                    verdict=Verdict("output", "v", []), signed=payload + bytes([index]), mark_id=1000 + index)


def lapse_lease(request_id: int) -> None:
    """Time passing for the lease: the worker stopped renewing it a while ago."""
    GenerationRequest.objects.filter(pk=request_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def actions_of(request_id: int) -> list[str]:
    return list(AuditEvent.objects.filter(object_type="generationrequest", object_id=str(request_id))
                .order_by("sequence").values_list("action", flat=True))


def test_a_running_request_holds_a_lease_and_a_lapsed_one_is_taken_over(db, active_model, no_broker):
    request = services.submit_request(caption="a red apple", num_images=1)
    started = services.start_request(request.pk)
    assert started.lease_expires_at > timezone.now() and started.worker
    assert services.start_request(request.pk) is None  # a duplicate message while the worker lives
    lapse_lease(request.pk)
    taken = services.start_request(request.pk)  # the redelivered message takes it over
    assert taken is not None and taken.attempts == 2 and taken.state == State.RUNNING
    assert actions_of(request.pk) == ["request.queued", "request.started", "request.taken_over", "request.started"]
    # The first attempt, still rendering somewhere, can neither finish nor fail the request.
    with pytest.raises(services.LeaseLost):
        services.finish_request(request.pk, [fake_signed_output(0)], 0.1, attempt=1)
    with pytest.raises(services.LeaseLost):
        services.fail_request(request.pk, "late failure", attempt=1)
    assert not Asset.objects.filter(request=request).exists()
    services.finish_request(request.pk, [fake_signed_output(0)], 0.1, attempt=2)
    assert GenerationRequest.objects.get(pk=request.pk).state == State.DONE
    assert verify_chain().ok


def test_maintenance_requeues_a_dead_workers_request_then_fails_it_with_a_reason(db, active_model, no_broker, settings,
                                                                                django_capture_on_commit_callbacks):
    settings.STACKGAN = {**settings.STACKGAN, "MAX_ATTEMPTS": 2}
    request = services.submit_request(caption="a blue bird", num_images=1)
    alive = services.submit_request(caption="a green tree", num_images=1)
    services.start_request(request.pk)
    services.start_request(alive.pk)
    lapse_lease(request.pk)
    no_broker.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.recover_lapsed_leases() == ([request.pk], [])
    assert no_broker == [request.pk]  # sent again at once
    row = GenerationRequest.objects.get(pk=request.pk)
    assert row.state == State.QUEUED and row.lease_expires_at is None and row.attempts == 1
    assert GenerationRequest.objects.get(pk=alive.pk).state == State.RUNNING  # its lease is live
    services.start_request(request.pk)
    lapse_lease(request.pk)
    assert services.recover_lapsed_leases() == ([], [request.pk])
    failed = GenerationRequest.objects.get(pk=request.pk)
    assert failed.state == State.FAILED and "worker stopped" in failed.error and "2 attempts" in failed.error
    assert actions_of(request.pk) == ["request.queued", "request.started", "request.requeued", "request.started",
                                      "request.failed"]
    assert verify_chain().ok


def test_a_request_past_its_deadline_is_recovered_even_with_a_live_lease(db, active_model, no_broker, settings):
    settings.STACKGAN = {**settings.STACKGAN, "REQUEST_DEADLINE_SECONDS": 60}
    request = services.submit_request(caption="a red apple", num_images=1)
    services.start_request(request.pk)
    GenerationRequest.objects.filter(pk=request.pk).update(started_at=timezone.now() - timedelta(seconds=61))
    assert services.recover_lapsed_leases()[0] == [request.pk]


def test_the_lease_keeper_renews_and_notices_a_takeover(transactional_db, active_model, no_broker, settings):
    settings.STACKGAN = {**settings.STACKGAN, "LEASE_SECONDS": 0.6}
    request = services.submit_request(caption="a red apple", num_images=1)
    started = services.start_request(request.pk)
    first_lease = started.lease_expires_at
    with services.LeaseKeeper(request.pk, started.attempts) as keeper:
        wait_until(lambda: GenerationRequest.objects.get(pk=request.pk).lease_expires_at > first_lease, 10,
                   "the lease to be renewed")
        GenerationRequest.objects.filter(pk=request.pk).update(attempts=started.attempts + 1)  # another worker's attempt
        wait_until(keeper.lost.is_set, 10, "the keeper to notice it lost the lease")


def test_a_submission_the_broker_cannot_take_stays_in_the_outbox_until_sent(transactional_db, active_model, worker_queue):
    with celery_broker(UNREACHABLE_BROKER):
        request = services.submit_request(caption="a red apple", num_images=1)
    row = GenerationRequest.objects.get(pk=request.pk)
    assert row.state == State.QUEUED and row.sent_at is None  # recorded, waiting to be sent
    assert services.send_pending_requests() == []  # just submitted: its own send may still be on the way
    later = timezone.now() + timedelta(seconds=10)
    with celery_broker(UNREACHABLE_BROKER):
        assert services.send_pending_requests(now=later) == []  # the broker is still away: nothing marked
    assert GenerationRequest.objects.get(pk=request.pk).sent_at is None
    assert services.send_pending_requests(now=later) == [request.pk]  # the configured, reachable broker
    assert GenerationRequest.objects.get(pk=request.pk).sent_at is not None
    assert services.queue_depth(worker_queue) == 1  # the message really is in the broker's queue
    assert services.send_pending_requests(now=later) == []  # sent once, not again


def test_the_next_submission_sends_what_the_broker_could_not_take(transactional_db, active_model, worker_queue):
    with celery_broker(UNREACHABLE_BROKER):
        waiting = services.submit_request(caption="a red apple", num_images=1)
    GenerationRequest.objects.filter(pk=waiting.pk).update(queued_at=timezone.now() - timedelta(seconds=30))
    services.submit_request(caption="a blue bird", num_images=1)
    assert GenerationRequest.objects.get(pk=waiting.pk).sent_at is not None
    assert services.queue_depth(worker_queue) == 2


def test_failed_storage_writes_leave_no_file_and_a_retry_overwrites_its_own(db, active_model, no_broker, settings, tmp_path):
    media = tmp_path / "faulty-media"
    failures = tmp_path / "failures"
    failures.write_text("1 1")  # the first write succeeds, the second fails half-written: a disk filling up
    settings.STACKGAN = {**settings.STACKGAN, "STORAGE": "tests.faults.FailingStorage",
                         "STORAGE_OPTIONS": {"location": str(media), "failures_file": str(failures)}}
    request = services.submit_request(caption="a red apple", num_images=2)
    started = services.start_request(request.pk)
    with pytest.raises(OSError, match="No space left"):
        services.finish_request(request.pk, [fake_signed_output(0), fake_signed_output(1)], 0.1, attempt=started.attempts)
    assert files_under(media) == []  # neither the complete first image nor the partial second remains
    assert not Asset.objects.filter(request=request).exists()
    # A worker killed after writing, before committing, leaves a file at the same name; the next
    # attempt replaces it instead of saving beside it under a suffixed name.
    name = services.asset_file_name(request, 0)
    (media / name).parent.mkdir(parents=True, exist_ok=True)
    (media / name).write_bytes(b"left by a killed worker")
    assets = services.finish_request(request.pk, [fake_signed_output(0), fake_signed_output(1)], 0.1,
                                     attempt=started.attempts)
    names = sorted(a.file.name for a in assets)
    assert names == sorted(services.asset_file_name(request, i) for i in (0, 1))
    assert files_under(media) == names
    assert (media / name).read_bytes() == b"signed-png\x00"


def test_a_request_that_fails_for_good_leaves_no_unowned_file(db, active_model, no_broker, settings,
                                                             django_capture_on_commit_callbacks):
    settings.STACKGAN = {**settings.STACKGAN, "MAX_ATTEMPTS": 1}
    request = services.submit_request(caption="a red apple", num_images=2)
    services.start_request(request.pk)
    media = Path(settings.STACKGAN["STORAGE_OPTIONS"]["location"])  # the private storage of this test
    leftover = media / services.asset_file_name(request, 1)
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half an image")
    lapse_lease(request.pk)
    with django_capture_on_commit_callbacks(execute=True):
        services.recover_lapsed_leases()
    assert GenerationRequest.objects.get(pk=request.pk).state == State.FAILED
    assert not leftover.exists()


def test_check_storage_lists_orphans_and_missing_files_and_deletes_orphans(db, active_model, no_broker, settings):
    media = Path(settings.STACKGAN["STORAGE_OPTIONS"]["location"])  # the private storage of this test
    request = services.submit_request(caption="a red apple", num_images=2)
    started = services.start_request(request.pk)
    kept, lost = services.finish_request(request.pk, [fake_signed_output(0), fake_signed_output(1)], 0.1,
                                         attempt=started.attempts)
    (media / lost.file.name).unlink()
    orphan = media / "stackgan" / "someone-else" / "0.png"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"a signed image with no row")
    out = io.StringIO()
    with pytest.raises(CommandError, match="disagree"):
        call_command("check_storage", "--min-age", "0", stdout=out)
    text = out.getvalue()
    assert "orphan: stackgan/someone-else/0.png" in text and f"missing: asset {lost.pk} file {lost.file.name}" in text
    assert kept.file.name not in text
    with pytest.raises(CommandError):  # the missing file is still missing after deleting orphans
        call_command("check_storage", "--min-age", "0", "--delete-orphans", stdout=io.StringIO())
    assert not orphan.exists() and (media / kept.file.name).exists()
    assert AuditEvent.objects.filter(action="storage.orphans_deleted").count() == 1
    recent = media / "stackgan" / "fresh" / "1.png"
    recent.parent.mkdir(parents=True)
    recent.write_bytes(b"being written")
    assert services.check_storage(min_age_seconds=600).orphans == []  # too young to judge
    with pytest.raises(CommandError, match="--min-age"):
        call_command("check_storage", "--min-age", "-1")


def test_sweep_requests_command_runs_the_maintenance_once(db, active_model, no_broker):
    request = services.submit_request(caption="a red apple", num_images=1)
    services.start_request(request.pk)
    lapse_lease(request.pk)
    out = io.StringIO()
    call_command("sweep_requests", stdout=out)
    assert f"re-queued 1 request(s) whose worker died ({request.pk})" in out.getvalue()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the server ends a connection only on PostgreSQL")
def test_a_connection_the_server_ended_is_replaced(transactional_db, active_model):
    import psycopg

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    with psycopg.connect(**{**params, "autocommit": True}) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])  # what a server restart does to a client
    from stackgan_django.services.worker import with_fresh_connection

    assert with_fresh_connection(lambda: GenerationRequest.objects.count(), "a test query") == 0


def test_checks_warn_when_nothing_schedules_the_maintenance_or_redis_would_redeliver_running_tasks(settings):
    from django.core.checks import run_checks

    assert not {"stackgan_django.W130", "stackgan_django.W131", "stackgan_django.W132"} & {m.id for m in run_checks()}
    settings.CELERY_BEAT_SCHEDULE = {}
    settings.CELERY_TASK_ACKS_LATE = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
    settings.CELERY_TASK_TIME_LIMIT = 660
    ids = {m.id for m in run_checks()}
    assert {"stackgan_django.W130", "stackgan_django.W131", "stackgan_django.W132"} <= ids
