from django.core.management.base import BaseCommand, CommandError

from stackgan_django.audit import verify_chain


class Command(BaseCommand):
    help = "Recompute the audit log's hash chain and name the first broken link. Exits 1 if broken."

    def handle(self, *args, **options):
        report = verify_chain()
        if not report.ok:
            raise CommandError(str(report), returncode=1)
        self.stdout.write(self.style.SUCCESS(str(report)))
