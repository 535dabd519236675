"""System checks: configuration mistakes found by `manage.py check`, development-only choices by
`manage.py check --deploy`."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured


@register(Tags.compatibility)
def check_settings(app_configs=None, **kwargs):
    from stackgan_django.conf import DEFAULTS, app_settings

    errors = []
    try:
        for name in DEFAULTS:
            getattr(app_settings, name)
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), hint="Fix the STACKGAN dict in your settings.", id="stackgan_django.E001"))
    return errors


@register(Tags.compatibility)
def check_policies(app_configs=None, **kwargs):
    from policies import PolicyError
    from stackgan_django.governance import current_policies

    try:
        current_policies()
    except (PolicyError, ImproperlyConfigured) as exc:
        return [Error(f"policy files cannot be loaded: {exc}", hint="Every caption will be refused until fixed.",
                      id="stackgan_django.E002")]
    return []


@register(Tags.database)
def check_active_model(app_configs=None, databases=None, **kwargs):
    if not databases:
        return []
    from django.db import DatabaseError

    from stackgan_django.models import ModelVersion

    try:
        active = ModelVersion.objects.filter(is_active=True).first()
    except DatabaseError:
        return []  # not migrated yet: migrate's own checks say so
    if active is None:
        return [Warning("no model version is active: requests will be refused",
                        hint="Run `manage.py bootstrap_demo` or `manage.py register_model DIR --activate`.",
                        id="stackgan_django.W001")]
    if not active.trained:
        return [Warning(f"the active model version {active.name!r} is an untrained network (noise-like images)",
                        hint="Register a trained checkpoint.", id="stackgan_django.W002")]
    return []


@register(Tags.security, deploy=True)
def check_development_choices(app_configs=None, **kwargs):
    warnings = []
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        warnings.append(Warning("the database is the embedded SQLite file, a development default",
                                hint="Set DATABASE_URL to a PostgreSQL database.", id="stackgan_django.W101"))
    broker = getattr(settings, "CELERY_BROKER_URL", "")
    if broker.startswith("filesystem://") or not broker:
        warnings.append(Warning("Celery uses the filesystem broker, a development default that cannot span hosts",
                                hint="Set CELERY_BROKER_URL to Redis or RabbitMQ.", id="stackgan_django.W102"))
    if "FileSystemStorage" in settings.STORAGES["default"]["BACKEND"]:
        warnings.append(Warning("generated images are stored on the local disk, which workers on other hosts "
                                "cannot share", hint="Set DJANGO_STORAGE_BACKEND to object storage.",
                                id="stackgan_django.W103"))
    if getattr(settings, "DEVELOPMENT_SECRET_KEY", None) == settings.SECRET_KEY:
        warnings.append(Warning("SECRET_KEY is the development key", hint="Set DJANGO_SECRET_KEY.",
                                id="stackgan_django.W104"))
    # DEBUG is Django's own security.W018.
    return warnings


@register(Tags.compatibility)
def check_signer(app_configs=None, **kwargs):
    """No asset is ever stored unsigned, so a signer that cannot sign is an error, not a warning."""
    from stackgan_django.provenance import SignerConfigurationError, get_signer

    try:
        problems = get_signer().problems()
    except (SignerConfigurationError, ImproperlyConfigured, OSError) as exc:
        problems = [str(exc)]
    return [Error(f"the C2PA signer cannot sign: {p}", hint="Fix STACKGAN['SIGNER'] / ['SIGNER_OPTIONS'].",
                  id="stackgan_django.E003") for p in problems]


@register(Tags.security, deploy=True)
def check_development_signer(app_configs=None, **kwargs):
    from stackgan_django.provenance import get_signer

    try:
        development = get_signer().is_development
    except Exception:  # reported by check_signer
        return []
    if development:
        return [Warning("C2PA manifests are signed with the development certificate generated under var/signing",
                        hint="Use PemFileSigner or CallbackSigner with a certificate from a real CA.",
                        id="stackgan_django.W106")]
    return []


# -- reliability (issue 13) --------------------------------------------------------------------------

@register(Tags.compatibility)
def check_reliability_settings(app_configs=None, **kwargs):
    """The periodic maintenance and the Celery settings that recovery relies on."""
    from stackgan_django.services.delivery import MAINTENANCE_TASK

    warnings = []
    schedule = getattr(settings, "CELERY_BEAT_SCHEDULE", None) or {}
    if not any(isinstance(entry, dict) and entry.get("task") == MAINTENANCE_TASK for entry in schedule.values()):
        warnings.append(Warning(
            f"no Celery beat schedule runs {MAINTENANCE_TASK!r}: requests whose worker died stay RUNNING, and requests "
            "submitted while the broker was down are not sent", id="stackgan_django.W130",
            hint=f"Add {{'task': '{MAINTENANCE_TASK}', 'schedule': 5.0}} to CELERY_BEAT_SCHEDULE and run celery beat."))
    if not getattr(settings, "CELERY_TASK_ACKS_LATE", False):
        warnings.append(Warning("CELERY_TASK_ACKS_LATE is off: a worker killed mid-task loses its message",
                                hint="Set CELERY_TASK_ACKS_LATE = True.", id="stackgan_django.W131"))
    transport = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    hard_limit = getattr(settings, "CELERY_TASK_TIME_LIMIT", None)
    visibility = transport.get("visibility_timeout", 3600)
    if str(getattr(settings, "CELERY_BROKER_URL", "")).startswith("redis") and hard_limit and visibility <= hard_limit:
        warnings.append(Warning(
            f"the Redis visibility timeout ({visibility} s) is not longer than the task time limit ({hard_limit} s): "
            "Redis hands a running request to a second worker", id="stackgan_django.W132",
            hint="Raise CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'] above CELERY_TASK_TIME_LIMIT."))
    return warnings
# -- the editor's and reviewer's desks (issue 15) --------------------------------------------------

@register(Tags.templates)
def check_desk_apps(app_configs=None, **kwargs):
    """The desk's pages load htmx through django-htmx's template tag; without the app every request
    page would fail to render."""
    from django.apps import apps

    if not apps.is_installed("django_htmx"):
        return [Error("'django_htmx' is not in INSTALLED_APPS; the admin's request pages need it (htmx is vendored there)",
                      hint="Add 'django_htmx' to INSTALLED_APPS.", id="stackgan_django.E010")]
    return []
