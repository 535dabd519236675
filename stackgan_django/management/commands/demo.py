"""The whole flow once from the command line: submit, wait for the worker, approve, verify."""

import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from stackgan_django import services
from stackgan_django.audit import verify_chain
from stackgan_django.conf import app_settings
from stackgan_django.models import GenerationRequest

CAPTIONS = [
    "a red apple with a green leaf",
    "a smiling yellow sun over blue water",
    "a n.u.d.e figure on a beach",  # shows the usage policy refusing an evasive spelling
    "a small brown dog face, flat style",
]


class Command(BaseCommand):
    help = "Submit captions, let a real Celery worker generate, approve one asset, and verify the audit chain."

    def add_arguments(self, parser):
        parser.add_argument("--start-worker", action="store_true", help="start a Celery worker subprocess for the demo")
        parser.add_argument("--timeout", type=int, default=600, help="seconds to wait for the worker")
        parser.add_argument("--images", type=int, default=2, help="images per caption")

    def handle(self, *args, start_worker, timeout, images, **options):
        call_command("bootstrap_demo", stdout=self.stdout)
        worker = self._start_worker() if start_worker else None
        try:
            self._run(timeout, images)
        finally:
            if worker is not None:
                worker.terminate()
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()

    def _start_worker(self) -> subprocess.Popen:
        log = open(settings.VAR_DIR / "demo-worker.log", "ab")
        self.stdout.write(f"starting a Celery worker (log: {settings.VAR_DIR / 'demo-worker.log'})")
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "gpu", "-c", "1", "--pool", "solo",
             "-l", "info", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            stdout=log, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR,
        )

    def _run(self, timeout: int, images: int) -> None:
        editor = get_user_model().objects.get(username="editor")
        reviewer = get_user_model().objects.get(username="reviewer")
        requests = []
        for caption in CAPTIONS:
            request = services.submit_request(caption=caption, num_images=images, purpose="editorial", user=editor)
            requests.append(request)
            if request.state == GenerationRequest.State.POLICY_DENIED:
                reasons = "; ".join(f"{d.rule_id}: {d.message}" for d in request.decisions.exclude(outcome="allow"))
                self.stdout.write(f"request {request.pk} REFUSED  {caption!r} -> {reasons}")
            else:
                self.stdout.write(f"request {request.pk} queued   {caption!r}")
        waiting = [r.pk for r in requests if r.state != GenerationRequest.State.POLICY_DENIED]
        deadline = time.monotonic() + timeout
        while True:
            states = dict(GenerationRequest.objects.filter(pk__in=waiting).values_list("pk", "state"))
            if all(s in (GenerationRequest.State.DONE, GenerationRequest.State.FAILED) for s in states.values()):
                break
            if time.monotonic() > deadline:
                raise CommandError(f"the worker did not finish within {timeout}s: {states}. Is a worker running?")
            time.sleep(0.5)
        assets = []
        for request in GenerationRequest.objects.filter(pk__in=waiting).order_by("pk"):
            ids = list(request.assets.values_list("pk", flat=True))
            assets += ids
            self.stdout.write(f"request {request.pk} {request.state}: assets {ids} in {request.compute_seconds or 0:.2f}s"
                              f"{' error: ' + request.error if request.error else ''}")
        if not assets:
            raise CommandError("no assets were created")
        approved = services.approve_asset(assets[0], reviewer, note="demo approval")
        self.stdout.write(f"asset {approved.pk} approved by reviewer ({approved.file.name})")
        report = verify_chain(app_settings.AUDIT_ANCHOR_FILE)
        if not report.ok:
            raise CommandError(str(report))
        self.stdout.write(self.style.SUCCESS(
            f"demo done: {len(assets)} assets created ({', '.join(map(str, assets))}), asset {approved.pk} approved, "
            f"{report}"))
