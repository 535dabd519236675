"""Recovery times with the production defaults (lease 30 s, beat every 5 s) unless told otherwise:

- broker back -> request picked up: a Redis of its own is killed while the workers are idle, requests
  are submitted meanwhile, Redis comes back after --outage seconds; time until the first of them
  starts, and until all are done.
- worker killed -> request re-queued: a solo worker is SIGKILLed while it renders a request; time
  until the maintenance task has re-queued it, and until another worker has finished it.

    python benchmarks/recovery.py [--outage 10 30] [--lease 30] [--beat 5] [--repeat 2]

Uses DATABASE_URL when set (PostgreSQL), else a fresh SQLite file; the broker is always its own
redis-server on port 8353 (the fault-test helpers start it), so nothing shared is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PORT = 8353


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outage", type=float, nargs="+", default=[10, 30], help="broker outage lengths, seconds")
    parser.add_argument("--lease", type=float, default=30, help="LEASE_SECONDS of the workers")
    parser.add_argument("--beat", type=float, default=5, help="seconds between maintenance runs")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--model", help="checkpoint folder (default: the shipped model)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="stackgan-recovery-"))
    os.environ["STACKGAN_VAR_DIR"] = str(base / "var")
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.fault_settings"
    from tests.faults import RedisServer

    redis = RedisServer(PORT).start()
    os.environ["CELERY_BROKER_URL"] = redis.url
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{base / 'db.sqlite3'}")
    media, hold = base / "media", base / "hold"
    media.mkdir()
    queue, maintenance_queue = f"recovery-{base.name}", f"recovery-maintenance-{base.name}"
    # This process submits like the web tier: same queue, signing folder and storage as the workers.
    os.environ["FAULT_STACKGAN"] = json.dumps({"QUEUE": queue, "SIGNER_OPTIONS": {"folder": str(base / "signing")}})
    os.environ["DJANGO_STORAGE_OPTIONS"] = json.dumps({"location": str(media)})
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from stackgan_django import services
    from stackgan_django.models import AuditEvent, GenerationRequest
    from tests.faults import CeleryWorker, subprocess_env, wait_until

    call_command("migrate", verbosity=0)
    services.register_model_version(f"recovery-{base.name}", args.model or ROOT / "models" / "default", activate=True)
    env = subprocess_env(database=os.environ["DATABASE_URL"], broker=redis.url, media=media, signing=base / "signing",
                         stackgan={"QUEUE": queue, "LEASE_SECONDS": args.lease,
                                   "GENERATOR_BACKEND": "tests.fault_backends.HeldPipelineBackend"},
                         maintenance_queue=maintenance_queue, extra={"FAULT_HOLD_FILE": str(hold)})
    env["STACKGAN_MAINTENANCE_INTERVAL"] = str(args.beat)
    workers = [CeleryWorker(env, [maintenance_queue], base / "maintenance.log", beat=True, name="maintenance"),
               CeleryWorker(env, [queue], base / "gpu.log", name="gpu")]
    results: dict[str, list[float]] = {}
    try:
        for worker in workers:
            worker.wait_ready(180)
        warm = services.submit_request(caption="a red apple", num_images=1)  # load the model once
        wait_until(lambda: GenerationRequest.objects.get(pk=warm.pk).state == "done", 300, "the warm-up request")

        for outage in args.outage:
            for _ in range(args.repeat):
                redis.stop()
                stopped = timezone.now()
                ids = [services.submit_request(caption="a blue heart", num_images=1).pk for _ in range(5)]
                wait_until(lambda stopped=stopped, outage=outage: (timezone.now() - stopped).total_seconds() >= outage,
                           outage + 5, "the outage", 0.1)
                redis.start()
                back = timezone.now()
                wait_until(lambda ids=ids: GenerationRequest.objects.filter(pk__in=ids, state="done").count() == len(ids),
                           600, "the requests of the outage")
                rows = GenerationRequest.objects.filter(pk__in=ids)
                results.setdefault(f"broker down {outage:.0f} s: back -> first picked up (s)", []).append(
                    (min(r.started_at for r in rows) - back).total_seconds())
                results.setdefault(f"broker down {outage:.0f} s: back -> all 5 done (s)", []).append(
                    (max(r.finished_at for r in rows) - back).total_seconds())

        for attempt in range(args.repeat):
            hold.touch()
            pk = services.submit_request(caption="a birthday cake", num_images=1).pk
            wait_until(lambda pk=pk: GenerationRequest.objects.get(pk=pk).state == "running" and Path(str(hold) + ".started").exists(),
                       300, "the request to be rendering")
            Path(str(hold) + ".started").unlink()
            killed = timezone.now()
            workers[1].kill()
            wait_until(lambda pk=pk: AuditEvent.objects.filter(object_id=str(pk), action="request.requeued").exists(), 300,
                       "the request to be re-queued")
            requeued = AuditEvent.objects.get(object_id=str(pk), action="request.requeued").created_at
            hold.unlink()
            workers[1] = CeleryWorker(env, [queue], base / f"gpu{attempt + 1}.log", name=f"gpu{attempt + 1}")
            workers[1].wait_ready(180)
            wait_until(lambda pk=pk: GenerationRequest.objects.get(pk=pk).state == "done", 300, "the request to finish")
            done = GenerationRequest.objects.get(pk=pk).finished_at
            results.setdefault("worker SIGKILL -> request re-queued (s)", []).append((requeued - killed).total_seconds())
            results.setdefault("worker SIGKILL -> done by a new worker, incl. its start (s)", []).append(
                (done - killed).total_seconds())
    finally:
        hold.unlink(missing_ok=True)
        for worker in workers:
            worker.stop()
        redis.close()
    print(f"lease {args.lease:g} s, maintenance every {args.beat:g} s, {args.repeat} run(s) each; logs in {base}")
    for name, values in results.items():
        print(f"  {name}: " + ", ".join(f"{v:.1f}" for v in values) + f"  (median {statistics.median(values):.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
