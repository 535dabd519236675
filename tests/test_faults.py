"""Faults on the real services, each ending with exact counts (requests, assets, files, audit
events) and a verified audit chain: a worker killed with SIGKILL mid-task (solo, and a prefork pool
child), the broker stopped while editors submit, PostgreSQL restarted while idle and while a request
runs, storage failing then recovering, and duplicate delivery.

Workers are real ``celery worker`` subprocesses (a maintenance worker with Celery beat embedded,
and generation workers); the broker is a redis-server this module starts on its own port, so it can
be stopped; the PostgreSQL that is restarted is a cluster this module makes with initdb. Nothing is
slept on: every wait polls with a deadline. The recovery times are printed (run with -s)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from datetime import datetime
from types import SimpleNamespace

import pytest
from django.db import connection
from django.utils import timezone

from stackgan_django import services
from stackgan_django.audit import verify_chain
from stackgan_django.models import Asset, AuditEvent, GenerationRequest
from tests.faults import (
    FAULT_SECRET_KEY,
    ROOT,
    CeleryWorker,
    PostgresServer,
    RedisServer,
    celery_broker,
    database_url,
    files_under,
    postgres_bin,
    subprocess_env,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="the fault tests start their own redis-server"),
]
State = GenerationRequest.State
RUN_ID = uuid.uuid4().hex[:8]
GPU_QUEUE = f"fault-gpu-{RUN_ID}"  # the module's generation worker
VICTIM_QUEUE = f"fault-victim-{RUN_ID}"  # a worker a test kills
MAINTENANCE_QUEUE = f"fault-maintenance-{RUN_ID}"
CAPTION = "a red apple with a green leaf"
SEED = 12345  # the tiny network's images for these seeds pass the output policy (see test_integration)
LEASE_SECONDS = 2
WORKER_SETTINGS = {"QUEUE": GPU_QUEUE, "LEASE_SECONDS": LEASE_SECONDS, "RESEND_AFTER_SECONDS": 3,
                   "GENERATOR_BACKEND": "tests.fault_backends.HeldPipelineBackend",
                   # The held generator must only ever run inside a task: a warm-up would hold too
                   # (and announce "started" before any request did).
                   "WARM_UP_WORKER": False}
DONE_TIMEOUT = 120


@pytest.fixture(scope="module")
def fault_redis():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def fault_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    (base / "media").mkdir()
    return SimpleNamespace(base=base, media=base / "media", hold=base / "hold", failures=base / "failures",
                           signing=tmp_path_factory.getbasetemp() / "signing")


def worker_env(fault_dirs, database: str, broker: str, **stackgan) -> dict[str, str]:
    return subprocess_env(
        database=database, broker=broker, media=fault_dirs.media, signing=fault_dirs.signing,
        stackgan={**WORKER_SETTINGS, **stackgan}, maintenance_queue=MAINTENANCE_QUEUE,
        storage_backend="tests.faults.FailingStorage", storage_options={"failures_file": str(fault_dirs.failures)},
        extra={"FAULT_HOLD_FILE": str(fault_dirs.hold)})


@pytest.fixture(scope="module")
def fault_workers(django_db_setup, django_db_blocker, fault_redis, fault_dirs):
    """The maintenance worker (with beat, every second) and one generation worker, for the module."""
    env = worker_env(fault_dirs, database_url(connection.settings_dict), fault_redis.url)
    maintenance = CeleryWorker(env, [MAINTENANCE_QUEUE], fault_dirs.base / "maintenance.log", beat=True, name="maintenance")
    gpu = CeleryWorker(env, [GPU_QUEUE], fault_dirs.base / "gpu.log", name="gpu")
    maintenance.wait_ready()
    gpu.wait_ready()
    yield SimpleNamespace(env=env, gpu=gpu, maintenance=maintenance)
    gpu.stop()
    maintenance.stop()


@pytest.fixture(autouse=True)
def fault_site(transactional_db, settings, fault_dirs, fault_redis, media_in_tmp, signing_dir):
    """This process (the web side) uses the module's broker, storage and queue, and commits for real
    (the workers are other processes); no file is held."""
    for leftover in fault_dirs.media.iterdir():
        shutil.rmtree(leftover)
    fault_dirs.failures.write_text("0")
    fault_dirs.hold.unlink(missing_ok=True)
    fault_dirs.hold.with_name("hold.started").unlink(missing_ok=True)
    # The workers' key (they refuse the development key with DEBUG off): names of files are keyed by it.
    settings.SECRET_KEY = FAULT_SECRET_KEY
    settings.STACKGAN = {**settings.STACKGAN, "QUEUE": GPU_QUEUE, "LEASE_SECONDS": LEASE_SECONDS,
                         "STORAGE": "tests.faults.FailingStorage",
                         "STORAGE_OPTIONS": {"location": str(fault_dirs.media), "failures_file": str(fault_dirs.failures)}}
    with celery_broker(fault_redis.url):
        yield
    fault_dirs.hold.unlink(missing_ok=True)  # never leave a worker held for the next test


def submit(count: int = 1, num_images: int = 1) -> list[int]:
    return [services.submit_request(caption=CAPTION, num_images=num_images, seed=SEED).pk for _ in range(count)]


def states(ids: list[int]) -> dict[int, str]:
    return dict(GenerationRequest.objects.filter(pk__in=ids).values_list("pk", "state"))


def wait_done(ids: list[int], timeout: float = DONE_TIMEOUT) -> None:
    def all_done() -> bool:
        found = states(ids)
        failed = {pk: GenerationRequest.objects.get(pk=pk).error for pk, s in found.items() if s == State.FAILED}
        assert not failed, f"requests failed: {failed}"
        return len(found) == len(ids) and all(s == State.DONE for s in found.values())
    wait_until(all_done, timeout, f"requests {ids} to be done")


def wait_running(request_id: int, fault_dirs) -> None:
    wait_until(lambda: states([request_id]).get(request_id) == State.RUNNING and fault_dirs.hold.with_name(
        "hold.started").exists(), 90, f"request {request_id} to be running in the generator")


def actions(request_id: int) -> list[str]:
    return list(AuditEvent.objects.filter(object_type="generationrequest", object_id=str(request_id))
                .order_by("sequence").values_list("action", flat=True))


def event_time(request_id: int, *names: str) -> datetime:
    return AuditEvent.objects.filter(object_type="generationrequest", object_id=str(request_id),
                                     action__in=names).order_by("sequence").values_list("created_at", flat=True).first()


def assert_exact_outcome(ids: list[int], num_images: int, media) -> None:
    """Every request DONE with exactly its assets, each at its one name; no other file; chain intact."""
    assert states(ids) == {pk: State.DONE for pk in ids}
    assets = list(Asset.objects.filter(request_id__in=ids).select_related("request"))
    assert len(assets) == len(ids) * num_images
    assert sorted((a.request_id, a.index) for a in assets) == sorted((pk, i) for pk in ids for i in range(num_images))
    names = sorted(a.file.name for a in assets)
    assert names == sorted(services.asset_file_name(a.request, a.index) for a in assets)  # no "_76iUmNT" copies
    assert files_under(media) == names  # not one file more: no orphan, no partial write
    assert GenerationRequest.objects.count() == len(ids)
    assert services.check_storage(min_age_seconds=0).ok
    report = verify_chain()
    assert report.ok, str(report)


def test_a_solo_worker_killed_mid_task_is_replaced_within_seconds(fault_workers, fault_dirs, active_model, settings):
    victim = CeleryWorker(fault_workers.env, [VICTIM_QUEUE], fault_dirs.base / "victim-solo.log", name="victim")
    victim.wait_ready()
    settings.STACKGAN = {**settings.STACKGAN, "QUEUE": VICTIM_QUEUE}  # only the victim gets the first message
    fault_dirs.hold.touch()
    try:
        [pk] = submit(num_images=2)
        wait_running(pk, fault_dirs)
        killed_at = timezone.now()
    finally:
        victim.kill()
    wait_until(lambda: AuditEvent.objects.filter(action="request.requeued", object_id=str(pk)).exists(), 60,
               "the dead worker's request to be requeued")
    print(f"\nsolo worker SIGKILL -> request re-queued: {(event_time(pk, 'request.requeued') - killed_at).total_seconds():.1f} s "
          f"(lease {LEASE_SECONDS} s, beat every 1 s)")
    fault_dirs.hold.unlink()
    wait_done([pk])  # the module's other worker finished it
    request = GenerationRequest.objects.get(pk=pk)
    assert request.attempts == 2 and request.error == ""
    assert actions(pk) == ["request.queued", "request.started", "request.requeued", "request.started", "request.done"]
    assert_exact_outcome([pk], 2, fault_dirs.media)


def test_a_prefork_child_killed_mid_task_does_not_leave_the_request_running(fault_workers, fault_dirs, active_model,
                                                                            settings):
    victim = CeleryWorker(fault_workers.env, [VICTIM_QUEUE], fault_dirs.base / "victim-prefork.log", pool="prefork",
                          name="prefork")
    victim.wait_ready()
    settings.STACKGAN = {**settings.STACKGAN, "QUEUE": VICTIM_QUEUE}
    try:
        fault_dirs.hold.touch()
        [pk] = submit(num_images=1)
        wait_running(pk, fault_dirs)
        child = int(fault_dirs.hold.with_name("hold.started").read_text())
        assert child in victim.children()  # the pool child, not the worker's main process
        killed_at = timezone.now()
        subprocess.run(["kill", "-KILL", str(child)], check=True)
        # Celery re-delivers the message at once; the new child either sees a live lease and leaves
        # it, after which the maintenance task requeues the request, or takes over a lapsed one.
        wait_until(lambda: {"request.requeued", "request.taken_over"} & set(actions(pk)), 60,
                   "the killed child's request to be recovered")
        recovered = event_time(pk, "request.requeued", "request.taken_over")
        print(f"\nprefork child SIGKILL -> request recovered: {(recovered - killed_at).total_seconds():.1f} s")
        fault_dirs.hold.unlink()
        wait_done([pk])
    finally:
        victim.kill()
    assert GenerationRequest.objects.get(pk=pk).attempts == 2
    assert actions(pk) in (
        ["request.queued", "request.started", "request.requeued", "request.started", "request.done"],
        ["request.queued", "request.started", "request.taken_over", "request.started", "request.done"],
    )
    assert_exact_outcome([pk], 1, fault_dirs.media)


def test_requests_submitted_while_the_broker_is_down_are_delivered_when_it_is_back(fault_workers, fault_redis,
                                                                                  fault_dirs, active_model):
    fault_dirs.hold.touch()  # the worker is busy, so the next two messages wait in Redis
    first = submit(3)
    wait_running(first[0], fault_dirs)
    wait_until(lambda: services.queue_depth(GPU_QUEUE) == 2, 30, "two messages waiting in the broker")
    fault_redis.stop()  # the two waiting messages die with it (no persistence)
    during = submit(7)
    assert all(GenerationRequest.objects.get(pk=pk).sent_at is None for pk in during)  # in the outbox
    fault_redis.start()
    back_at = timezone.now()
    fault_dirs.hold.unlink()
    ids = first + during
    wait_done(ids)
    requests = {r.pk: r for r in GenerationRequest.objects.filter(pk__in=ids)}
    unsent_pickup = min(requests[pk].started_at for pk in during) - back_at
    lost_pickup = min(requests[pk].started_at for pk in first[1:]) - back_at
    print(f"\nbroker back -> first request submitted during the outage picked up: {unsent_pickup.total_seconds():.1f} s; "
          f"-> first lost message's request picked up: {lost_pickup.total_seconds():.1f} s; "
          f"all 10 done {(max(r.finished_at for r in requests.values()) - back_at).total_seconds():.1f} s after")
    assert all(r.attempts == 1 for r in requests.values())
    for pk in ids:
        assert actions(pk) == ["request.queued", "request.started", "request.done"]
    assert_exact_outcome(ids, 1, fault_dirs.media)


def test_storage_failing_part_way_leaves_nothing_behind_and_the_retry_succeeds(fault_workers, fault_dirs, active_model):
    fault_dirs.failures.write_text("1 1")  # the first image is written, the second hits a full disk
    [pk] = submit(num_images=2)
    wait_done([pk])
    request = GenerationRequest.objects.get(pk=pk)
    assert request.attempts == 2 and request.error == ""
    assert actions(pk) == ["request.queued", "request.started", "request.retrying", "request.started", "request.done"]
    retrying = AuditEvent.objects.get(object_id=str(pk), action="request.retrying")
    assert "No space left on device" in retrying.data["error"]
    assert fault_dirs.failures.read_text().split() == ["0", "0"]  # both injected outcomes happened
    assert_exact_outcome([pk], 2, fault_dirs.media)


def test_duplicate_delivery_makes_no_duplicate(fault_workers, fault_dirs, active_model):
    from celery import current_app

    fault_dirs.hold.touch()
    [pk] = submit(num_images=2)
    wait_running(pk, fault_dirs)
    # A second worker gets the same request while the first renders it under a live lease.
    assert services.process_request(pk) == "skipped"
    log = fault_workers.gpu.log
    skipped_before = log.read_text(errors="replace").count("needs no work")
    for _ in range(2):  # and two more copies of the message wait in the broker
        current_app.send_task(services.GENERATE_TASK, args=[pk], queue=GPU_QUEUE)
    fault_dirs.hold.unlink()
    wait_done([pk])
    wait_until(lambda: log.read_text(errors="replace").count("needs no work") == skipped_before + 2, 60,
               "the worker to take and skip both duplicate messages")
    assert services.process_request(pk) == "skipped"  # and once more after it is done
    assert GenerationRequest.objects.get(pk=pk).attempts == 1
    assert actions(pk) == ["request.queued", "request.started", "request.done"]
    assert_exact_outcome([pk], 2, fault_dirs.media)


# -- PostgreSQL restarted: a cluster of this module's own ----------------------------------------------

@pytest.fixture(scope="module")
def private_postgres(fault_dirs):
    if postgres_bin() is None:
        pytest.skip("no PostgreSQL binaries in /usr/lib/postgresql/*/bin")
    server = PostgresServer().init()
    server.start()
    server.psql("CREATE DATABASE faults_template")
    env = subprocess_env(database=server.url("faults_template"), broker="memory://", media=fault_dirs.media,
                         signing=fault_dirs.signing, stackgan={}, maintenance_queue=MAINTENANCE_QUEUE)
    migrated = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    yield server
    server.close()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="this process must speak to PostgreSQL to follow the restart")
def test_postgresql_restarted_while_idle_and_while_a_request_runs(private_postgres, fault_redis, fault_dirs,
                                                                  transactional_db, tiny_checkpoint, settings):
    name = f"faults_{uuid.uuid4().hex[:8]}"
    private_postgres.psql(f"CREATE DATABASE {name} TEMPLATE faults_template")
    queue = f"fault-pg-{RUN_ID}"
    # A lease longer than a restart takes, so the request keeps its worker (the test is about reconnecting).
    env = worker_env(fault_dirs, private_postgres.url(name), fault_redis.url, QUEUE=queue, LEASE_SECONDS=10)
    settings.STACKGAN = {**settings.STACKGAN, "QUEUE": queue}
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(NAME=name, HOST="127.0.0.1", PORT=str(private_postgres.port), USER="postgres",
                                    PASSWORD="")
    workers = []
    try:
        services.register_model_version("tiny-pg", tiny_checkpoint, activate=True)
        workers = [CeleryWorker(env, [MAINTENANCE_QUEUE], fault_dirs.base / "pg-maintenance.log", beat=True,
                                name="pg-maintenance"),
                   CeleryWorker(env, [queue], fault_dirs.base / "pg-gpu.log", name="pg-gpu")]
        for worker in workers:
            worker.wait_ready()
        [before] = submit()
        wait_done([before])

        private_postgres.stop("fast")  # restart while idle: every connection is cut
        private_postgres.start()
        connection.close()
        [after_idle] = submit()
        wait_done([after_idle])

        fault_dirs.hold.touch()
        [running] = submit()
        wait_running(running, fault_dirs)
        private_postgres.stop("fast")  # restart while the request renders
        private_postgres.start()
        connection.close()
        fault_dirs.hold.unlink()
        wait_done([running])

        ids = [before, after_idle, running]
        assert [GenerationRequest.objects.get(pk=pk).attempts for pk in ids] == [1, 1, 1]
        for pk in ids:
            assert actions(pk) == ["request.queued", "request.started", "request.done"]
        assert_exact_outcome(ids, 1, fault_dirs.media)
        assert "lost the database connection" in workers[1].tail(200_000)  # it really had to reconnect
    finally:
        for worker in workers:
            worker.stop()
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def test_the_soft_time_limit_fails_the_request_with_a_reason(fault_workers, fault_dirs, active_model, settings):
    stackgan = {**json.loads(fault_workers.env["FAULT_STACKGAN"]), "MAX_ATTEMPTS": 1}
    # 10 s: loading the model inside the task takes 1-4 s here, and a soft limit that fires while
    # third-party loading code runs can be swallowed there; the limit must fall in the held generation.
    env = {**fault_workers.env, "STACKGAN_TASK_TIME_LIMIT": "10", "FAULT_STACKGAN": json.dumps(stackgan)}
    slow = CeleryWorker(env, [VICTIM_QUEUE], fault_dirs.base / "time-limit.log", pool="prefork", name="time-limit")
    slow.wait_ready()
    settings.STACKGAN = {**settings.STACKGAN, "QUEUE": VICTIM_QUEUE}
    try:
        fault_dirs.hold.touch()  # the generator hangs until the soft limit (10 s, prefork only) interrupts it
        [pk] = submit(num_images=1)
        wait_until(lambda: states([pk])[pk] == State.FAILED, 60, "the request to fail at the soft time limit")
    finally:
        slow.kill()
    request = GenerationRequest.objects.get(pk=pk)
    assert request.error == "Generation took longer than the worker's time limit and was stopped."
    assert actions(pk) == ["request.queued", "request.started", "request.failed"]
    assert not Asset.objects.filter(request_id=pk).exists() and files_under(fault_dirs.media) == []
    assert verify_chain().ok

