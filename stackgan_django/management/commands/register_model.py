from django.core.management.base import BaseCommand, CommandError

from stackgan_django import services


class Command(BaseCommand):
    help = "Register a checkpoint folder as a model version (and optionally activate it)."

    def add_arguments(self, parser):
        parser.add_argument("folder")
        parser.add_argument("--name", required=True)
        parser.add_argument("--notes", default="")
        parser.add_argument("--activate", action="store_true")

    def handle(self, *args, folder, name, notes, activate, **options):
        try:
            model_version = services.register_model_version(name, folder, notes=notes, activate=activate)
        except services.WorkflowError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(
            f"model version {model_version.name} ({model_version.checkpoint_sha256[:12]}) "
            f"{'active' if model_version.is_active else 'registered'}"))
