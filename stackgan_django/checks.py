"""System checks: configuration mistakes found by `manage.py check`, development-only choices by
`manage.py check --deploy`."""

from __future__ import annotations

from pathlib import Path

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


# The prefix Django gives the keys it generates for development (startproject); ours has it too.
INSECURE_KEY_PREFIX = "django-insecure-"


def uses_development_secret_key() -> bool:
    """Whether SECRET_KEY is the host project's published development key (or Django's marked
    development kind)."""
    key = str(settings.SECRET_KEY)
    return key == getattr(settings, "DEVELOPMENT_SECRET_KEY", None) or key.startswith(INSECURE_KEY_PREFIX)


@register(Tags.security)
def check_secret_key(app_configs=None, **kwargs):
    """An error, not only a deploy warning: with DEBUG off the site is served to others, and the
    development key is in the source. Whoever reads it can sign download URLs for any asset and,
    unless STACKGAN["WATERMARK_KEY"] is set, derive the watermark key and reverse the pseudonyms in
    signed manifests. runserver, migrate and every other management command refuse to start on an
    error; config/wsgi.py refuses too, since gunicorn runs no checks."""
    if settings.DEBUG or not uses_development_secret_key():
        return []
    return [Error("SECRET_KEY is the published development key while DEBUG is off: anyone who has the source "
                  "can sign download URLs and, unless STACKGAN['WATERMARK_KEY'] is set, derive the watermark key "
                  "and reverse reviewer pseudonyms",
                  hint="Set DJANGO_SECRET_KEY to a long random secret, e.g. the output of `python -c \"from "
                       "django.core.management.utils import get_random_secret_key; print(get_random_secret_key())\"`. "
                       "For development on your own machine set DJANGO_DEBUG=1 instead (`make run` does).",
                  id="stackgan_django.E004")]


def refuse_development_secret_key() -> None:
    """Raise ImproperlyConfigured where check_secret_key reports its error: for entry points that
    run no system checks (a WSGI server such as gunicorn)."""
    for error in check_secret_key():
        raise ImproperlyConfigured(f"{error.msg} ({error.id}). {error.hint}")


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
    from stackgan_django.conf import app_settings

    try:
        storage_backend = str(app_settings.STORAGE)
    except ImproperlyConfigured:
        storage_backend = ""  # reported by stackgan_django.E001
    if "FileSystemStorage" in storage_backend:
        warnings.append(Warning("generated images are stored on the local disk, which workers on other hosts "
                                "cannot share", hint="Set STACKGAN_STORAGE_BACKEND to private object storage.",
                                id="stackgan_django.W103"))
    if uses_development_secret_key():  # with DEBUG off, also the error stackgan_django.E004
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
# -- private files (issue 11) ------------------------------------------------------------------------

PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


def _served_roots(patterns, found: list[Path] | None = None) -> list[Path]:
    """document_root of every django.views.static.serve route in the URLconf (nested includes too)."""
    from django.urls import URLPattern, URLResolver
    from django.views.static import serve

    found = [] if found is None else found
    for entry in patterns:
        if isinstance(entry, URLResolver):
            _served_roots(entry.url_patterns, found)
        elif isinstance(entry, URLPattern) and entry.callback is serve and entry.default_args.get("document_root"):
            found.append(Path(entry.default_args["document_root"]))
    return found


@register(Tags.security, deploy=True)
def check_private_files(app_configs=None, **kwargs):
    """Fails (errors, so `check --deploy` exits non-zero) when the app's files could be fetched
    without the authorised views: a storage folder a web server or a route serves, or a bucket
    whose objects are public."""
    from django.urls import get_resolver

    from stackgan_django.conf import app_settings
    from stackgan_django.storage import configured_backend

    errors = []
    try:
        backend = configured_backend()
        options = app_settings.STORAGE_OPTIONS or {}
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="stackgan_django.E110")]
    location = getattr(backend, "location", None)
    if location:
        location = Path(location)
        for setting in ("MEDIA_ROOT", "STATIC_ROOT"):
            public = getattr(settings, setting, None)
            if public and _inside(location, Path(public)):
                errors.append(Error(f"the private storage ({location}) is inside {setting} ({public}), which the "
                                    "web server publishes: every generated file, approved or not, would be public",
                                    hint="Point STACKGAN['STORAGE_OPTIONS']['location'] outside MEDIA_ROOT and STATIC_ROOT.",
                                    id="stackgan_django.E111"))
        try:
            roots = _served_roots(get_resolver().url_patterns)
        except Exception:  # a broken URLconf is reported by Django's own checks
            roots = []
        for root in roots:
            if _inside(location, root):
                errors.append(Error(f"a URL route serves {root}, which holds the private storage ({location})",
                                    hint="Remove the django.views.static.serve route; files leave through the API.",
                                    id="stackgan_django.E112"))
    public_bucket = (str(options.get("default_acl", "")).lower() in PUBLIC_ACLS
                     or options.get("querystring_auth") is False or bool(options.get("custom_domain")))
    if public_bucket:
        errors.append(Error("the private storage's options make its objects publicly readable "
                            "(a public ACL, querystring_auth False, or a public custom_domain)",
                            hint="Use a private bucket: default_acl 'private', querystring_auth True, no custom_domain.",
                            id="stackgan_django.E113"))
    return errors


@register(Tags.security, deploy=True)
def check_rate_limit_cache(app_configs=None, **kwargs):
    """Rate limits count in the default cache: a per-process cache lets each web process count alone."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if backend.endswith(("LocMemCache", "DummyCache")):
        return [Warning("API and admin log-in rate limits count in a per-process cache, so each web process "
                        "allows the full rate", hint="Set DJANGO_CACHE_URL to Redis (e.g. redis://cache:6379/1).",
                        id="stackgan_django.W107")]
    return []


@register(Tags.compatibility)
def check_webhooks(app_configs=None, **kwargs):
    """Each STACKGAN["WEBHOOKS"] entry needs an http(s) URL and a secret to sign with."""
    from stackgan_django.conf import app_settings
    from stackgan_django.services.webhooks import WEBHOOK_EVENTS

    try:
        endpoints = app_settings.WEBHOOKS or []
    except ImproperlyConfigured:
        return []  # check_settings (E001) reports the broken STACKGAN dict once
    errors = []
    for number, endpoint in enumerate(endpoints, start=1):
        problem = None
        if not isinstance(endpoint, dict):
            problem = "is not a dict"
        elif not str(endpoint.get("url", "")).startswith(("http://", "https://")):
            problem = "needs an http:// or https:// url"
        elif not endpoint.get("secret"):
            problem = "needs a secret (receivers check the X-Stackgan-Signature HMAC with it)"
        elif set(endpoint.get("events", WEBHOOK_EVENTS)) - set(WEBHOOK_EVENTS):
            problem = f"names unknown events; known: {', '.join(WEBHOOK_EVENTS)}"
        if problem:
            errors.append(Error(f"STACKGAN['WEBHOOKS'] entry {number} {problem}", id="stackgan_django.E114"))
    return errors


# -- the audit log of access changes ---------------------------------------------------------------

@register(Tags.security)
def check_access_audit_middleware(app_configs=None, **kwargs):
    """Without the middleware, changes of users, groups and permissions are still audit events, but
    recorded as made by "system" whoever made them in the admin."""
    middleware = list(getattr(settings, "MIDDLEWARE", []))
    name = "stackgan_django.access_audit.CurrentActorMiddleware"
    auth = "django.contrib.auth.middleware.AuthenticationMiddleware"
    if name not in middleware or (auth in middleware and middleware.index(name) < middleware.index(auth)):
        return [Warning(f"{name} is not in MIDDLEWARE after AuthenticationMiddleware; the audit log would record "
                        "changes of users, groups and permissions as made by 'system'",
                        hint=f"Add '{name}' to MIDDLEWARE after '{auth}'.", id="stackgan_django.W140")]
    return []


# -- hostile addresses and bodies -----------------------------------------------------------------

INPUT_GUARD_MIDDLEWARE = {
    "stackgan_django.input_limits.RequestBodyLimitMiddleware": "a body of any size would be spooled to disk",
    "stackgan_django.input_limits.NulCharacterMiddleware": "a NUL character in an address would be a 500 on PostgreSQL",
}


@register(Tags.security)
def check_input_guard_middleware(app_configs=None, **kwargs):
    """The app's own views and change lists refuse what they can, but only a middleware sees every
    path before Django's layers read a body or a query reaches the database."""
    middleware = list(getattr(settings, "MIDDLEWARE", []))
    return [Warning(f"{name} is not in MIDDLEWARE; {consequence}", hint=f"Add '{name}' near the top of MIDDLEWARE.",
                    id="stackgan_django.W141")
            for name, consequence in INPUT_GUARD_MIDDLEWARE.items() if name not in middleware]
