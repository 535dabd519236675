"""Settings of the demo host project.

Embedded defaults need nothing running: SQLite, Celery's filesystem broker and media, all under
var/. Environment variables switch to production parts with no code change:

- ``DATABASE_URL``: e.g. postgres://user@host:5432/name (psycopg 3)
- ``CELERY_BROKER_URL``: redis://127.0.0.1:6379/0 or amqp://guest:guest@127.0.0.1:5672//
- ``DJANGO_STORAGE_BACKEND`` / ``DJANGO_STORAGE_OPTIONS`` (JSON): e.g. storages.backends.s3.S3Storage
- ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG``, ``DJANGO_ALLOWED_HOSTS``, ``STACKGAN_VAR_DIR``
- ``STACKGAN_STORAGE_BACKEND`` / ``STACKGAN_STORAGE_OPTIONS`` (JSON): the private storage of generated
  files (default: var/private on the local disk, served by no URL)
- ``DJANGO_CACHE_URL``: redis://127.0.0.1:6379/1 for rate limits shared by every web process
"""

import json
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("STACKGAN_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Public, so refused while DEBUG is off (stackgan_django.E004): anywhere but your own machine, set
# DJANGO_SECRET_KEY.
DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-key-stackgan-django"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", DEVELOPMENT_SECRET_KEY)
# Off unless asked for (`make run` asks): DEBUG pages leak settings and tracebacks.
DEBUG = os.environ.get("DJANGO_DEBUG", "0").lower() in ("1", "true", "yes")
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "stackgan_django",
    # The editor's live request page: htmx, vendored in django-htmx (no CDN).
    "django_htmx",
]

# -- API v1 (issue 11): hashed, scoped API keys (plain DRF tokens are gone), bounded parsers, JSON
# errors, throttles on the cache, a schema with a local Swagger UI.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First, so an anonymous request is answered 401 with WWW-Authenticate: Api-Key.
        "stackgan_django.api_keys.ApiKeyAuthentication",
        "stackgan_django.api_keys.StaffSessionAuthentication",  # the admin's session, staff only
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["stackgan_django.input_limits.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": ["stackgan_django.throttling.ApiKeyScopeThrottle"],
    "EXCEPTION_HANDLER": "stackgan_django.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # How many reverse proxies of ours append to X-Forwarded-For in front of this server. 0: rate
    # limits count by REMOTE_ADDR and ignore the header, which any client can write (DRF's default,
    # None, trusts all of it).
    "NUM_PROXIES": int(os.environ.get("DJANGO_TRUSTED_PROXIES", "0")),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "stackgan-django API", "VERSION": "1.0.0",
    "DESCRIPTION": "Approved, provenance-signed generated images; requests; verification. "
                   "Authenticate with `Authorization: Api-Key <prefix>.<secret>`.",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_INCLUDE_SCHEMA": False,
    # The verify answer's "file": named for what it is rather than drf-spectacular's "FileEnum".
    "ENUM_NAME_OVERRIDES": {"VerifiedFileEnum": "stackgan_django.services.verification.FILE_VERDICTS"},
    # Swagger UI from the installed sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR", "SWAGGER_UI_FAVICON_HREF": "SIDECAR", "REDOC_DIST": "SIDECAR",
}
# Bodies bounded before parsing (JSON and form fields; an upload to verify has its own limit).
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 100
# The most files one form sends: the policy evaluation page takes a CSV and two policy files.
DATA_UPLOAD_MAX_NUMBER_FILES = 3
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Rate limits live in the cache: local memory per process by default, Redis when named.
if os.environ.get("DJANGO_CACHE_URL", "").startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": os.environ["DJANGO_CACHE_URL"]}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

MIDDLEWARE = [
    # Outermost, so no HTML error page from any layer below leaves /api/ (issue 11).
    "stackgan_django.api_errors.ApiJsonErrorsMiddleware",
    # Next, so an oversized body is refused before any layer reads it (on every path).
    "stackgan_django.input_limits.RequestBodyLimitMiddleware",
    # A NUL in an address reaches no query: PostgreSQL refuses it in text (a 500).
    "stackgan_django.input_limits.NulCharacterMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Names the person behind a change of users, groups or permissions in the audit log.
    "stackgan_django.access_audit.CurrentActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": dj_database_url.config(default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}", conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock up front, so a web process and a worker never
    # deadlock upgrading read locks; the test database is a file so a worker thread can share it.
    # WAL with synchronous=NORMAL: a commit appends to the write-ahead log without waiting for the
    # disk (the log is synced at checkpoints). The database stays consistent after a crash; a power
    # cut may lose the last commits, which the workflow already survives (a request whose DONE was
    # lost is RUNNING again, its lease lapses and it is re-run over its own file names). With the
    # default rollback journal each commit cost a sync, 12-18 ms here: a fifth of a worker's time
    # per image outside the generator. Readers also no longer wait for the worker's writes.
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 30,
                                       "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("DJANGO_MEDIA_ROOT", VAR_DIR / "media"))
STORAGES = {
    "default": {
        "BACKEND": os.environ.get("DJANGO_STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage"),
        "OPTIONS": json.loads(os.environ.get("DJANGO_STORAGE_OPTIONS", "{}")),
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Celery: the filesystem broker needs no server; CELERY_BROKER_URL names Redis or RabbitMQ.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery" / os.environ.get("STACKGAN_QUEUE_NAMESPACE", "queue")
    for _sub in ("out", "processed", "control"):
        (_queue_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "out"),
        "data_folder_out": str(_queue_dir / "out"),
        "processed_folder": str(_queue_dir / "processed"),
        # Exchange tables; kombu's default is "control" in the working directory.
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True  # the database, not a result backend, holds every outcome
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ROUTES = {"stackgan_django.generate": {"queue": "gpu"}}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# -- Reliability (issue 13): long GPU tasks, a broker or database that goes away -----------------
# Late acknowledgement (above): a message is acked only when its task returns, so a worker killed
# mid-task loses nothing; prefetch 1 (above): a worker never holds a second request hostage while it
# renders. The database is the source of truth either way: a running request's lease and the
# maintenance task below recover what a message cannot.
_TASK_SECONDS = int(os.environ.get("STACKGAN_TASK_TIME_LIMIT", "600"))
# The soft limit raises inside the task, which fails the request with a reason the editor sees
# (and retries it while attempts remain); the hard limit kills a child that ignores it (prefork
# pool only: the solo pool has no time limits, there the lease deadline REQUEST_DEADLINE_SECONDS does it).
CELERY_TASK_SOFT_TIME_LIMIT = _TASK_SECONDS
CELERY_TASK_TIME_LIMIT = _TASK_SECONDS + 60
# A task that raised or hit its hard limit is acked: its row already says what happened (QUEUED
# again or FAILED), or its lease lapses and the maintenance task requeues it. Redelivering the
# message would only repeat a failure the services have counted.
CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT = True
# On a broker connection loss, a task already rendering finishes and writes its result to the
# database (the images are not wasted); its unacked message comes back later as a duplicate, which
# start_request skips. Set explicitly: the default changes in Celery 6.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Reconnect to the broker for ever (a worker that gave up after 100 tries stays dead), and keep a
# web request that submits while the broker is down short: about one second of publish retries,
# then the request stays in the outbox (sent_at empty) and beat's maintenance task sends it.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.3, "interval_max": 0.5}
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Longer than the longest task (hard limit), else Redis hands a running task to a second worker.
        "visibility_timeout": max(3600, 2 * CELERY_TASK_TIME_LIMIT),
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
        "retry_on_timeout": True,
        "health_check_interval": 10,
    }
# Celery beat runs the maintenance task every few seconds on its own small queue, so it never waits
# behind a GPU task: lapsed leases requeued (a dead worker's request is back within LEASE_SECONDS +
# this interval), the outbox sent (a submission made while the broker was down reaches a worker a few
# seconds after the broker is back). "expires": beats missed while no maintenance worker ran are dropped.
STACKGAN_MAINTENANCE_QUEUE = os.environ.get("STACKGAN_MAINTENANCE_QUEUE", "stackgan-maintenance")
_MAINTENANCE_SECONDS = float(os.environ.get("STACKGAN_MAINTENANCE_INTERVAL", "5"))
CELERY_BEAT_SCHEDULE = {
    "stackgan-maintenance": {
        "task": "stackgan_django.maintain",
        "schedule": _MAINTENANCE_SECONDS,
        "options": {"queue": STACKGAN_MAINTENANCE_QUEUE, "expires": max(_MAINTENANCE_SECONDS * 2, 5)},
    },
}
CELERY_TASK_ROUTES = {**CELERY_TASK_ROUTES, "stackgan_django.maintain": {"queue": STACKGAN_MAINTENANCE_QUEUE}}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# A worker reconnects to PostgreSQL after a restart: a persistent connection is checked before
# reuse (CONN_HEALTH_CHECKS; Celery's Django fixup closes unusable ones before each task), and the
# services reopen a connection that died mid-task (services.worker.with_fresh_connection).
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# -- end reliability ----------------------------------------------------------------------------

STACKGAN = {
    "MODEL_DIR": os.environ.get("STACKGAN_MODEL_DIR") or None,
    # Private storage of generated files (issue 11): outside MEDIA_ROOT, served by no route.
    "STORAGE": os.environ.get("STACKGAN_STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage"),
    "STORAGE_OPTIONS": json.loads(os.environ.get("STACKGAN_STORAGE_OPTIONS", "{}"))
    or {"location": str(VAR_DIR / "private")},
    # The audit chain's head, anchored outside the database (verify_audit_chain checks it).
    "AUDIT_ANCHOR_FILE": os.environ.get("STACKGAN_AUDIT_ANCHOR_FILE") or str(VAR_DIR / "audit-anchors.jsonl"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
