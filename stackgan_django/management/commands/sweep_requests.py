from django.core.management.base import BaseCommand

from stackgan_django.services import run_maintenance


class Command(BaseCommand):
    help = ("Run the periodic maintenance once: re-queue requests whose worker died (lapsed lease), fail those out of "
            "attempts, and send requests the broker never took. Celery beat runs this every few seconds; the command "
            "is for operators.")

    def handle(self, *args, **options):
        summary = run_maintenance()
        self.stdout.write(
            f"re-queued {len(summary['requeued'])} request(s) whose worker died{self._ids(summary['requeued'])}; "
            f"failed {len(summary['failed'])}{self._ids(summary['failed'])}; "
            f"sent {len(summary['sent'])} waiting request(s){self._ids(summary['sent'])}")

    @staticmethod
    def _ids(ids):
        return f" ({', '.join(map(str, ids))})" if ids else ""
