from django.core.management.base import BaseCommand, CommandError

from stackgan_django.audit import verify_chain
from stackgan_django.conf import app_settings


class Command(BaseCommand):
    help = ("Recompute the audit log's hash chain and name the first broken link; check every anchor of the "
            "chain's head (STACKGAN['AUDIT_ANCHOR_FILE'], or --anchors) against it. Exits 1 if broken.")

    def add_arguments(self, parser):
        parser.add_argument("--anchors", help="an anchor file to check (default: STACKGAN['AUDIT_ANCHOR_FILE']), "
                            "e.g. a copy kept on another machine")
        parser.add_argument("--no-anchors", action="store_true", help="check the links only")

    def handle(self, *args, **options):
        anchors = None if options["no_anchors"] else (options["anchors"] or app_settings.AUDIT_ANCHOR_FILE)
        report = verify_chain(anchors)
        if not report.ok:
            raise CommandError(str(report), returncode=1)
        self.stdout.write(self.style.SUCCESS(str(report)))
