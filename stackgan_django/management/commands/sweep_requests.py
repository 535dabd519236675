from django.core.management.base import BaseCommand

from stackgan_django.services import sweep_stale_requests


class Command(BaseCommand):
    help = "Re-enqueue generation requests stuck in QUEUED or RUNNING past their deadline (run from cron)."

    def handle(self, *args, **options):
        swept = sweep_stale_requests()
        self.stdout.write(f"re-enqueued {len(swept)} request(s){': ' + ', '.join(map(str, swept)) if swept else ''}")
