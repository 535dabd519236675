"""Batching across requests in the worker: waiting requests for one model version are drawn in one
forward pass, then each is checked, signed, stored and finished on its own, under its own lease and
attempt. A real Celery worker with the configured broker and database; a real worker process killed
mid-batch; real storage failures and a real takeover by another worker inside a batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.db import close_old_connections, connection, connections
from django.utils import timezone

from stackgan_django import generation, services
from stackgan_django.audit import verify_chain
from stackgan_django.models import Asset, AuditEvent, GenerationRequest
from tests.batch_backends import CountingPipelineBackend
from tests.faults import ROOT, database_url, files_under, subprocess_env, wait_until

State = GenerationRequest.State
CAPTION = "a red apple with a green leaf"
SEED = 12345  # the tiny network's images for seeds 12345.. pass the output policy (see test_integration)


@pytest.fixture
def counting_backend(settings):
    """The optimised backend with its forward passes counted; no warm-up (it would count too)."""
    settings.STACKGAN = {**settings.STACKGAN, "GENERATOR_BACKEND": "tests.batch_backends.CountingPipelineBackend",
                         "WARM_UP_WORKER": False, "GENERATION_BATCH_SIZE": 16}
    generation._backends.clear()
    CountingPipelineBackend.reset()
    yield CountingPipelineBackend
    CountingPipelineBackend.reset()
    generation._backends.clear()


def actions(request_id: int) -> list[str]:
    return list(AuditEvent.objects.filter(object_type="generationrequest", object_id=str(request_id))
                .order_by("sequence").values_list("action", flat=True))


def submit(count: int, num_images: int = 1, caption: str = CAPTION) -> list[int]:
    # Seeds that never overlap between requests: each request's images are its own.
    return [services.submit_request(caption=caption, num_images=num_images, seed=SEED + num_images * i).pk
            for i in range(count)]


def storage_files(settings) -> list[str]:
    return files_under(Path(settings.STACKGAN["STORAGE_OPTIONS"]["location"]))


def assert_done_with_own_assets(ids: list[int], num_images: int, settings) -> None:
    """Every request DONE, each image either an asset of that request at its own name or refused by
    the output policy, leases released, and not one file in storage that no asset owns."""
    for pk in ids:
        request = GenerationRequest.objects.get(pk=pk)
        assert request.state == State.DONE, request.error
        assert request.lease_expires_at is None and request.attempts == 1 and request.compute_seconds > 0
        assets = list(request.assets.order_by("index"))
        refused = request.decisions.filter(stage="output", outcome="deny").count()
        assert len(assets) + refused == num_images
        for asset in assets:
            assert asset.seed == request.seed + asset.index
            assert asset.file.name == services.asset_file_name(request, asset.index)
            assert asset.provenance_state == "Trusted"
        assert actions(pk) == ["request.queued", "request.started", "request.done"]
    owned = sorted(Asset.objects.filter(request_id__in=ids).values_list("file", flat=True))
    assert storage_files(settings) == owned
    assert verify_chain().ok


@pytest.mark.integration
def test_requests_waiting_while_the_worker_is_busy_are_drawn_in_one_forward_pass(counting_backend, celery_worker,
                                                                                 active_model, settings):
    counting_backend.gate.clear()  # the generator holds the first request until the others wait
    [first] = submit(1, num_images=2)
    assert counting_backend.entered.wait(120), "the worker never reached the generator"
    waiting = [services.submit_request(caption=f"{CAPTION}, {n}", num_images=2, seed=SEED + 100 * n).pk
               for n in range(1, 6)]
    assert services.queue_depth(settings.STACKGAN["QUEUE"]) >= 1  # their messages wait in the broker
    counting_backend.gate.set()
    wait_until(lambda: set(GenerationRequest.objects.filter(pk__in=[first, *waiting]).values_list("state", flat=True))
               <= {State.DONE, State.FAILED} and len(GenerationRequest.objects.filter(
                   pk__in=[first, *waiting], state__in=[State.DONE, State.FAILED])) == 6, 180, "all six to finish")
    # Two forward passes for six requests: the first alone, then the five that waited, together.
    assert [len(jobs) for jobs in counting_backend.passes] == [1, 5]
    assert counting_backend.passes[1] == [(f"{CAPTION}, {n}", 2) for n in range(1, 6)]
    assert_done_with_own_assets([first, *waiting], 2, settings)
    leader, *claimed = waiting
    for pk in claimed:  # started by the leader's task, each with its own attempt and lease
        started = AuditEvent.objects.get(object_id=str(pk), action="request.started")
        assert started.data["batch_with"] == leader
    # The claimed requests' own messages found them done and were dropped: nothing ran twice.
    wait_until(lambda: services.queue_depth(settings.STACKGAN["QUEUE"]) == 0, 60, "the queue to drain")
    assert len(counting_backend.passes) == 2


def test_one_failing_request_of_a_batch_leaves_the_others_done_and_itself_retryable(
        counting_backend, transactional_db, active_model, no_broker, settings, tmp_path,
        django_capture_on_commit_callbacks):
    failures = tmp_path / "failures"
    failures.write_text("1 1")  # the first request's image is stored, the second's hits a full disk
    media = Path(settings.STACKGAN["STORAGE_OPTIONS"]["location"])
    settings.STACKGAN = {**settings.STACKGAN, "STORAGE": "tests.faults.FailingStorage",
                         "STORAGE_OPTIONS": {"location": str(media), "failures_file": str(failures)}}
    # Seeds 12345-12347 give images the output policy lets through; the taken request's do not matter.
    lead, full_disk, taken, fine = (services.submit_request(caption=CAPTION, num_images=1, seed=seed).pk
                                    for seed in (SEED, SEED + 1, SEED + 9, SEED + 2))

    def another_worker_takes_over() -> None:
        # Mid-pass, ``taken``'s lease lapses and another worker starts it (a real takeover).
        GenerationRequest.objects.filter(pk=taken).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert services.start_request(taken).attempts == 2

    counting_backend.during_pass = another_worker_takes_over
    with django_capture_on_commit_callbacks(execute=True):
        assert services.process_request(lead) == "done"
    assert [len(jobs) for jobs in counting_backend.passes] == [4]  # one pass for the four
    rows = {r.pk: r for r in GenerationRequest.objects.filter(pk__in=[lead, full_disk, taken, fine])}
    assert rows[lead].state == State.DONE and rows[fine].state == State.DONE
    assert rows[lead].assets.count() == 1 and rows[fine].assets.count() == 1
    # The disk-full request is queued again with its reason, its attempt counted, no file of its own left.
    assert rows[full_disk].state == State.QUEUED and rows[full_disk].attempts == 1
    assert "No space left on device" in rows[full_disk].error and not rows[full_disk].assets.exists()
    assert actions(full_disk) == ["request.queued", "request.started", "request.retrying"]
    assert no_broker[-1:] == [full_disk]  # sent to the workers again
    # The request taken over belongs to its new attempt: the batch stored nothing for it.
    assert rows[taken].state == State.RUNNING and rows[taken].attempts == 2 and not rows[taken].assets.exists()
    owned = sorted(Asset.objects.values_list("file", flat=True))
    assert files_under(media) == owned
    # The retry runs alone (it failed once) and succeeds; the storage is whole.
    counting_backend.during_pass = None
    assert services.process_request(full_disk) == "done"
    assert [len(jobs) for jobs in counting_backend.passes] == [4, 1]
    assert GenerationRequest.objects.get(pk=full_disk).assets.count() == 1
    assert files_under(media) == sorted(Asset.objects.values_list("file", flat=True))
    assert verify_chain().ok


def test_batching_off_draws_each_request_alone(counting_backend, transactional_db, active_model, no_broker, settings):
    settings.STACKGAN = {**settings.STACKGAN, "GENERATION_BATCH_SIZE": 1}
    ids = submit(3)
    for pk in ids:
        assert services.process_request(pk) == "done"
    assert [len(jobs) for jobs in counting_backend.passes] == [1, 1, 1]
    assert_done_with_own_assets(ids, 1, settings)


def test_a_batch_takes_waiting_requests_oldest_first_up_to_the_batch_size_in_images(
        counting_backend, transactional_db, active_model, no_broker, settings):
    settings.STACKGAN = {**settings.STACKGAN, "GENERATION_BATCH_SIZE": 6}
    lead = submit(1, num_images=2)[0]
    big, small_a, small_b, small_c = (services.submit_request(caption=CAPTION, num_images=n, seed=SEED + 50 * i).pk
                                      for i, n in enumerate((3, 1, 1, 1), start=1))
    assert services.process_request(lead) == "done"
    # 2 + 3 + 1 = 6 images: the oldest that fit; the rest wait for their own messages.
    assert [sum(n for _, n in jobs) for jobs in counting_backend.passes] == [6]
    states = dict(GenerationRequest.objects.values_list("pk", "state"))
    assert [states[pk] for pk in (lead, big, small_a, small_b, small_c)] == [State.DONE] * 3 + [State.QUEUED] * 2


def test_two_workers_claiming_at_once_never_take_the_same_request(transactional_db, active_model, no_broker, settings):
    """Real concurrent claims on the configured database (SQLite ignores skip_locked: the claim is
    an UPDATE conditional on the row still being QUEUED)."""
    settings.STACKGAN = {**settings.STACKGAN, "GENERATION_BATCH_SIZE": 8}
    leads = submit(2)
    waiting = submit(12)
    claimed: dict[int, list[int]] = {}
    barrier = threading.Barrier(2)

    def worker(lead: int) -> None:
        try:
            request = services.start_request(lead)
            barrier.wait(30)
            claimed[lead] = [r.pk for r in services.claim_waiting_requests(request)]
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(lead,)) for lead in leads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    close_old_connections()
    together = claimed[leads[0]] + claimed[leads[1]]
    assert len(together) == len(set(together)) == 12 and set(together) == set(waiting)
    for pk in waiting:
        assert actions(pk) == ["request.queued", "request.started"]
        assert GenerationRequest.objects.get(pk=pk).attempts == 1
    assert verify_chain().ok


@pytest.mark.integration
def test_a_worker_killed_mid_batch_leaves_every_claimed_request_to_the_maintenance(
        transactional_db, active_model, no_broker, settings, tmp_path, signing_dir, django_capture_on_commit_callbacks):
    """A real worker process draws four requests in one pass and is killed (SIGKILL) inside it."""
    media = Path(settings.STACKGAN["STORAGE_OPTIONS"]["location"])
    hold = tmp_path / "hold"
    hold.touch()
    ids = submit(4)
    env = subprocess_env(database=database_url(connection.settings_dict), broker="memory://", media=media,
                         signing=signing_dir, maintenance_queue="unused",
                         stackgan={"GENERATOR_BACKEND": "tests.fault_backends.HeldPipelineBackend",
                                   "WARM_UP_WORKER": False, "GENERATION_BATCH_SIZE": 16},
                         extra={"FAULT_HOLD_FILE": str(hold)})
    script = ("import sys, django; django.setup(); from stackgan_django import services; "
              "services.process_request(int(sys.argv[1]))")
    worker = subprocess.Popen([sys.executable, "-c", script, str(ids[0])], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: hold.with_name("hold.started").exists() and GenerationRequest.objects.filter(
            pk__in=ids, state=State.RUNNING).count() == 4, 180, "the worker to hold all four in one pass")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
    assert all(GenerationRequest.objects.get(pk=pk).lease_expires_at is not None for pk in ids)
    later = timezone.now() + timedelta(seconds=settings.STACKGAN.get("LEASE_SECONDS", 30) + 5)
    no_broker.clear()
    with django_capture_on_commit_callbacks(execute=True):
        requeued, failed = services.recover_lapsed_leases(now=later)
    assert sorted(requeued) == sorted(ids) and failed == [] and sorted(no_broker) == sorted(ids)
    hold.unlink()
    for pk in ids:  # each message runs its request again; a request that lost a worker runs alone
        assert services.process_request(pk) == "done"
    for pk in ids:
        request = GenerationRequest.objects.get(pk=pk)
        assert request.attempts == 2 and request.state == State.DONE
        assert actions(pk) == ["request.queued", "request.started", "request.requeued", "request.started", "request.done"]
    assert files_under(media) == sorted(Asset.objects.values_list("file", flat=True))
    assert verify_chain().ok


def test_the_eager_backend_batches_too_and_matches_one_by_one(db, active_model, settings):
    settings.STACKGAN = {**settings.STACKGAN, "GENERATOR_BACKEND": "stackgan_django.generation.PipelineBackend"}
    generation._backends.clear()
    try:
        backend = generation.backend_for(active_model)
        requests = [("a red apple", [1, 2]), ("a smiling sun", [3]), ("a blue bird", [4, 5, 6])]
        batched = generation.generate_batch(backend, requests)
        for (caption, seeds), together in zip(requests, batched, strict=True):
            for alone, item in zip(backend.generate(caption, seeds), together, strict=True):
                assert alone.seed == item.seed
                difference = np.abs(np.asarray(alone.image, dtype=int) - np.asarray(item.image, dtype=int)).max()
                assert difference <= 1  # within one 8-bit level
    finally:
        generation._backends.clear()


def test_one_lease_keeper_renews_a_whole_batch_and_marks_only_the_request_taken_over(transactional_db, active_model,
                                                                                     no_broker, settings):
    settings.STACKGAN = {**settings.STACKGAN, "LEASE_SECONDS": 0.6}
    lead, other, taken = (services.start_request(pk) for pk in submit(3))
    leases = {other.pk: other.attempts, taken.pk: taken.attempts}
    with services.LeaseKeeper(lead.pk, lead.attempts, leases) as keeper:
        first = dict(GenerationRequest.objects.values_list("pk", "lease_expires_at"))
        wait_until(lambda: all(GenerationRequest.objects.get(pk=pk).lease_expires_at > first[pk]
                               for pk in (lead.pk, other.pk, taken.pk)), 10, "all three leases to be renewed")
        GenerationRequest.objects.filter(pk=taken.pk).update(attempts=taken.attempts + 1)  # another worker's attempt
        wait_until(lambda: keeper.has_lost(taken.pk), 10, "the keeper to notice the takeover")
        assert not keeper.has_lost(lead.pk) and not keeper.has_lost(other.pk) and not keeper.lost.is_set()
        keeper.release(lead.pk)  # finished: no longer renewed
        renewed = GenerationRequest.objects.get(pk=other.pk).lease_expires_at
        wait_until(lambda: GenerationRequest.objects.get(pk=other.pk).lease_expires_at > renewed, 10,
                   "the remaining lease to be renewed")


@pytest.mark.parametrize("mode", ["first", "every"])
def test_a_batch_is_checked_signed_and_stored_in_few_writes_with_each_file_checked_after_signing(
        mode, counting_backend, transactional_db, active_model, no_broker, settings, django_assert_max_num_queries):
    """Four requests of two images in one batch: the output policy runs over all eight images at
    once, the claims' audit events go in one INSERT, each request is stored in its own transaction
    (assets and decisions in one INSERT each). With VERIFY_AFTER_SIGNING "first" the first file is
    validated in full and the rest get the structural check; with "every", every file is validated."""
    from stackgan_django.provenance import manifests
    from stackgan_django.services import worker

    settings.STACKGAN = {**settings.STACKGAN, "VERIFY_AFTER_SIGNING": mode}
    manifests.reset_cache()
    ids = submit(4, num_images=2)
    checked_batches: list[int] = []
    real = worker.check_batch

    def counted(jobs):
        checked_batches.append(sum(len(rendered) for _, rendered in jobs))
        return real(jobs)

    worker.check_batch = counted
    try:
        # 25 for the batch (start: 9 with its transaction and audit event; claims: 9, their events
        # in one INSERT; the model version; 3 progress writes; the requests' decisions and fresh
        # watermark ids, one query each), then 11 per request, however many images it has (its
        # transaction, lock, existing assets, one INSERT of assets, one of decisions, the state,
        # its audit event). 90 before, with INSERTs per image and per claim.
        with django_assert_max_num_queries(25 + 11 * len(ids)):
            assert services.process_request(ids[0]) == "done"
    finally:
        worker.check_batch = real
    assert checked_batches == [8]
    assert_done_with_own_assets(ids, 2, settings)
    reports = [a.provenance for a in Asset.objects.filter(request_id__in=ids).order_by("request_id", "index")]
    assert all(r["state"] == "Trusted" and r["watermark"]["found"] for r in reports)
    if mode == "every":
        assert {r["checked"] for r in reports} == {"full"}
    else:
        assert reports[0]["checked"] == "full" and {r["checked"] for r in reports[1:]} == {"structure"}
    started = AuditEvent.objects.filter(action="request.started").order_by("sequence")
    assert [e.object_id for e in started] == [str(pk) for pk in ids]  # claims in order, one chain


def test_with_overlap_the_next_batch_is_drawn_while_the_last_is_governed(
        counting_backend, transactional_db, active_model, no_broker, settings):
    """OVERLAP_GOVERNANCE forced on (CUDA's default) on the CPU: six waiting one-image requests in
    batches of two. The second forward pass waits, inside the drawing thread, until the first
    batch's requests are DONE: it can only get there if the first batch is governed meanwhile."""
    settings.STACKGAN = {**settings.STACKGAN, "GENERATION_BATCH_SIZE": 2, "OVERLAP_GOVERNANCE": True}
    ids = submit(6)
    seen_during_second_pass: list[list[str]] = []

    def second_pass_waits_for_the_first_batch() -> None:
        if len(counting_backend.passes) != 2:
            return
        try:
            wait_until(lambda: GenerationRequest.objects.filter(pk__in=ids[:2], state=State.DONE).count() == 2, 60,
                       "the first batch to be stored while the second is drawn")
            seen_during_second_pass.append(list(GenerationRequest.objects.filter(pk__in=ids).order_by("pk")
                                                .values_list("state", flat=True)))
        finally:
            connections.close_all()  # this thread's own connection

    counting_backend.during_pass = second_pass_waits_for_the_first_batch
    assert services.process_request(ids[0]) == "done"
    assert [len(jobs) for jobs in counting_backend.passes] == [2, 2, 2]
    # The first batch stored, the second being drawn, the third not yet claimed (it is claimed when
    # the second's governance starts).
    assert seen_during_second_pass == [[State.DONE] * 2 + [State.RUNNING] * 2 + [State.QUEUED] * 2]
    assert_done_with_own_assets(ids, 1, settings)
    for pk in ids[2:]:  # the later batches were claimed by the first request's task
        assert AuditEvent.objects.get(object_id=str(pk), action="request.started").data["batch_with"] == ids[0]
    # Their own messages find them done; a request whose message comes first still runs alone.
    assert [services.process_request(pk) for pk in ids[1:]] == ["skipped"] * 5


def test_overlap_is_off_on_a_cpu_unless_asked(counting_backend, transactional_db, active_model, no_broker, settings):
    from stackgan_django.services import worker

    assert worker.overlap_governance(active_model) is False  # the tests' generator runs on the CPU
    settings.STACKGAN = {**settings.STACKGAN, "OVERLAP_GOVERNANCE": True}
    assert worker.overlap_governance(active_model) is True
    ids = submit(4)
    settings.STACKGAN = {**settings.STACKGAN, "GENERATION_BATCH_SIZE": 2, "OVERLAP_GOVERNANCE": False}
    assert services.process_request(ids[0]) == "done"
    assert [len(jobs) for jobs in counting_backend.passes] == [2]  # one batch; the rest wait for their messages


def test_stamping_in_threads_keeps_each_request_its_own_images_and_failures(
        counting_backend, transactional_db, active_model, no_broker, settings, monkeypatch):
    """GOVERNANCE_THREADS 3: a batch's images are stamped at once in three threads; each request
    still gets exactly its own signed, checked files and audit trail, and a request whose signing
    is pending (a timestamp authority away) is deferred alone, nothing of it stored."""
    from stackgan_django import provenance

    settings.STACKGAN = {**settings.STACKGAN, "GOVERNANCE_THREADS": 3}
    ids = submit(3, num_images=2)
    pending = services.submit_request(caption=f"{CAPTION}, signed later", num_images=2, seed=SEED + 90).pk
    real = provenance.stamp_image

    def stamp_image(image, *, request, **kwargs):
        if request.pk == pending:
            raise provenance.SigningUnavailable("the timestamp authority did not answer")
        return real(image, request=request, **kwargs)

    monkeypatch.setattr(provenance, "stamp_image", stamp_image)
    assert services.process_request(ids[0]) == "done"
    assert [len(jobs) for jobs in counting_backend.passes] == [4]
    assert_done_with_own_assets(ids, 2, settings)
    marks = list(Asset.objects.values_list("mark_id", flat=True))
    assert len(marks) == len(set(marks)) and None not in marks
    assert all(a.provenance["state"] == "Trusted" and a.provenance["watermark"]["mark_id"] == a.mark_id
               for a in Asset.objects.all())
    deferred = GenerationRequest.objects.get(pk=pending)
    assert deferred.state == State.QUEUED and deferred.error.startswith("signing pending")
    assert not deferred.assets.exists() and actions(pending)[-1] == "request.signing_pending"
