"""Demo accounts and a model version, so a fresh checkout has a working admin."""

import hashlib
import secrets
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand

from policies import PolicyError
from policies.embedding import EncoderUnavailable
from stackgan_django import services
from stackgan_django.conf import PACKAGE_ROOT, app_settings
from stackgan_django.governance import current_policies
from stackgan_django.models import ModelVersion

SHIPPED_MODEL_DIR = PACKAGE_ROOT / "models" / "default"
ACCOUNTS = {
    "admin": {"superuser": True, "group": None},
    "editor": {"superuser": False, "group": "Editors"},
    "reviewer": {"superuser": False, "group": "Compliance"},
}
GROUP_PERMISSIONS = {
    "Editors": ["add_generationrequest", "view_generationrequest", "view_asset", "view_policydecision"],
    "Compliance": ["view_generationrequest", "view_asset", "review_asset", "view_policydecision", "view_review",
                   "view_auditevent", "view_modelversion", "change_generationrequest",
                   # issue 15: compliance sees everyone's requests and the pilot report
                   "view_all_requests", "view_pilot_report"],
}


def model_source() -> tuple[Path, str, str]:
    """(folder, name, notes): the configured model, the shipped one, or an untrained network."""
    if app_settings.MODEL_DIR:
        folder = Path(app_settings.MODEL_DIR)
        return folder, folder.name, "configured in STACKGAN['MODEL_DIR']"
    if (SHIPPED_MODEL_DIR / "config.json").is_file():
        from generator.checkpoint import checkpoint_sha256
        from policies.near_copy import near_copy_index_sha256

        # Named by content (weights, config and near-copy index), so a retrained shipped model, or a
        # rebuilt index, becomes a new version, not a clash.
        sha = checkpoint_sha256(SHIPPED_MODEL_DIR)
        index_sha = near_copy_index_sha256(SHIPPED_MODEL_DIR)
        if index_sha:
            sha = hashlib.sha256(f"{sha}:{index_sha}".encode()).hexdigest()
        return SHIPPED_MODEL_DIR, f"shipped-{sha[:12]}", "the model shipped in the repository (models/default)"
    folder = Path(settings.VAR_DIR) / "models" / "untrained-v2"
    if not (folder / "config.json").is_file():
        from generator.__main__ import init_untrained
        from generator.config import StackGANConfig

        init_untrained(folder, StackGANConfig(), seed=0, text_encoder=app_settings.TEXT_ENCODER_PATH)
    return folder, "untrained-v2", "untrained StackGAN-v2 network: real generator, random weights"


class Command(BaseCommand):
    help = "Create demo accounts (admin, editor, reviewer) and register and activate a model version."

    def handle(self, *args, **options):
        credentials_file = Path(settings.VAR_DIR) / "demo-credentials.txt"
        saved = {}
        if credentials_file.is_file():
            saved = dict(line.split(":", 1) for line in credentials_file.read_text().splitlines() if ":" in line)
        users = get_user_model()
        for group_name, codenames in GROUP_PERMISSIONS.items():
            group, _ = Group.objects.get_or_create(name=group_name)
            group.permissions.set(Permission.objects.filter(content_type__app_label__in=["stackgan_django"],
                                                            codename__in=codenames))
        for username, spec in ACCOUNTS.items():
            password = saved.get(username) or secrets.token_urlsafe(9)
            user = users.objects.filter(username=username).first() or users(username=username)
            user.is_staff = True
            user.is_superuser = spec["superuser"]
            user.set_password(password)
            user.save()
            if spec["group"]:
                user.groups.add(Group.objects.get(name=spec["group"]))
            saved[username] = password
        credentials_file.write_text("".join(f"{u}:{p}\n" for u, p in saved.items()))
        credentials_file.chmod(0o600)

        folder, name, notes = model_source()
        active = ModelVersion.objects.filter(is_active=True).first()
        # A trained model replaces an untrained placeholder; a model someone chose stays. The shipped
        # model is named by its content: when scripts/promote-run.py has replaced models/default since,
        # the active version's files are not the ones it was registered with, and workers refuse to
        # draw with them, so the new files are registered (the data policy checks their lineage) and
        # activated in its place.
        replaced = (active is not None and folder == SHIPPED_MODEL_DIR and name != active.name
                    and Path(active.checkpoint_path).resolve() == folder.resolve())
        if active is None or (not active.trained and name != active.name) or replaced:
            services.register_model_version(name, folder, notes=notes, activate=True)
        active = ModelVersion.objects.get(is_active=True)
        self.stdout.write(f"model version in use: {active.name} ({active.notes or active.checkpoint_path})")
        self.stdout.write("demo accounts (also in var/demo-credentials.txt):")
        for username in ACCOUNTS:
            self.stdout.write(f"  {username:9} password: {saved[username]}")
        self._prepare_usage_policy()

    def _prepare_usage_policy(self) -> None:
        """Embed the usage policy's examples now, into the vector cache the server and the workers
        read: on a fresh machine that takes tens of seconds, which the editor's first caption would
        otherwise wait (a later process reads the cache in a few seconds)."""
        started = time.perf_counter()
        try:
            policies = current_policies()
            if policies.usage.semantic is not None:
                policies.usage.semantic.warm_up()
        except (PolicyError, EncoderUnavailable) as exc:  # the server fails closed on every caption as well
            self.stderr.write(f"usage policy not ready: {exc}")
            return
        self.stdout.write(f"usage policy {policies.version[:12]} ready ({time.perf_counter() - started:.0f} s)")
