from django.core.management.base import BaseCommand, CommandError

from stackgan_django.services import check_storage, delete_orphans
from stackgan_django.services.storage_check import DEFAULT_MIN_AGE_SECONDS


class Command(BaseCommand):
    help = ("Compare the asset storage with the database: files no asset owns (orphans) and assets whose file is "
            "missing. Exit status 1 when anything is wrong; --delete-orphans removes the orphans.")

    def add_arguments(self, parser):
        parser.add_argument("--delete-orphans", action="store_true", help="delete the orphan files found")
        parser.add_argument("--min-age", type=float, default=DEFAULT_MIN_AGE_SECONDS,
                            help="ignore files younger than this many seconds (an attempt may be about to commit them)")

    def handle(self, *args, **options):
        if options["min_age"] < 0:
            raise CommandError("--min-age must be 0 or more seconds")
        report = check_storage(min_age_seconds=options["min_age"])
        self.stdout.write(f"{report.files_seen} file(s) checked, {len(report.orphans)} orphan(s), "
                          f"{len(report.missing)} asset file(s) missing, {report.skipped_recent} too recent to judge")
        for name in report.orphans:
            self.stdout.write(f"orphan: {name}")
        for asset_id, field_name, name in report.missing:
            self.stdout.write(f"missing: asset {asset_id} {field_name} {name}")
        if options["delete_orphans"] and report.orphans:
            deleted = delete_orphans(report)
            self.stdout.write(f"deleted {len(deleted)} orphan file(s)")
            report.orphans = [n for n in report.orphans if n not in deleted]
        if not report.ok:
            raise CommandError("storage and database disagree (see above)")
