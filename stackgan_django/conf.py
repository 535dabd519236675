"""The app's settings: one ``STACKGAN`` dict in the host settings, read through ``app_settings``.

Defaults live here, not in django.conf.settings. Unknown keys are an error (a typo must not be
silently ignored), dotted paths are imported on first use, and everything reloads when a test
overrides ``STACKGAN``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from policies.output import MAX_CHECKED_PIXELS

PACKAGE_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, Any] = {
    # Where the pluggable generator lives; it must offer load(model_version) -> object with generate().
    # The optimised generator (batch norm folded, phase up-sampling, channels-last), checked against
    # the eager network when it loads; "stackgan_django.generation.PipelineBackend" runs it as trained.
    "GENERATOR_BACKEND": "stackgan_django.fast_backend.OptimisedPipelineBackend",
    # "cuda", "cuda:1", "cpu", or None for CUDA when present.
    "DEVICE": None,
    # A local transformers folder; None = the packaged all-MiniLM-L6-v2.
    "TEXT_ENCODER_PATH": None,
    # The checkpoint the bootstrap command registers; None = the shipped model, else an untrained one.
    "MODEL_DIR": None,
    "MAX_IMAGES_PER_REQUEST": 8,
    "MAX_CAPTION_LENGTH": 1000,
    "MAX_SEED": 2**63 - 1,
    # Private storage of generated files (dotted path + constructor arguments): no URL of it is ever
    # handed out; files leave only through the app's authorised views. FileSystemStorage defaults to
    # var/private (outside MEDIA_ROOT); production names e.g. storages.backends.s3.S3Storage with a
    # private bucket. STORAGE_PREFIX is the folder inside it.
    "STORAGE": "django.core.files.storage.FileSystemStorage",
    "STORAGE_OPTIONS": {},
    "STORAGE_PREFIX": "stackgan",
    # A folder of policy TOML files; None = the defaults shipped in policies/default/.
    "POLICY_DIR": None,
    # Where the semantic layer keeps its examples' vectors, so a new process loads the policy in about
    # a second instead of embedding thousands of examples: None = $STACKGAN_POLICY_CACHE or
    # ~/.cache/stackgan-django/policy-vectors; "" = no disk cache.
    "POLICY_CACHE_DIR": None,
    # RUNNING longer than this: the lease is no longer renewed and the request is taken over (a hung
    # generator; on the solo pool Celery's time limits do not apply).
    "REQUEST_DEADLINE_SECONDS": 900,
    "MAX_ATTEMPTS": 3,
    # Separation of duties: the person who requested an image may not approve or reject it (someone
    # holding both roles would otherwise clear their own work). True only for a one-person pilot.
    "ALLOW_SELF_REVIEW": False,
    "QUEUE": "gpu",
    # Reliability (issue 13). A RUNNING request holds a lease its worker renews every third of
    # LEASE_SECONDS; a lapsed lease means the worker died and the request is taken over.
    "LEASE_SECONDS": 30,
    # Load and warm the active model when a worker process starts (worker_start), so the first
    # request costs what the others cost. Off for workers that never generate, or in tests of other things.
    "WARM_UP_WORKER": True,
    # Batching across requests: a worker that starts a request also takes other waiting requests
    # for the same model version, oldest first, until this many images, and draws them all in one
    # forward pass (then checks, signs and stores each request on its own). 1 turns it off. 16
    # 256 px images are about 5x the throughput of one by one on a CPU; the first request of a batch
    # then waits for the whole pass.
    "GENERATION_BATCH_SIZE": 16,
    # While one batch is checked, signed and stored, draw the next waiting requests (a thread; up to
    # four batches per task). None = only when the generator runs on CUDA, where the forward pass
    # leaves the CPU free; True / False force it (True on a CPU only shares the same cores).
    "OVERLAP_GOVERNANCE": None,
    # Threads that stamp a batch's images (watermark, PNG, C2PA signature, check) at once; signing
    # itself stays one at a time. 1 = in turn. Worth more than 1 where cores are free during the
    # governance (a GPU host); on a CPU whose cores another process holds it gains little.
    "GOVERNANCE_THREADS": 1,
    # A QUEUED request the broker took but no worker started within this many seconds, while the
    # broker's queue is empty, lost its message (a broker restarted without persistence): it is sent
    # again (ten times later if the queue is busy). A duplicate is harmless.
    "RESEND_AFTER_SECONDS": 30,
    # Provenance. The signer class (dotted path) and its constructor arguments: DevelopmentSigner
    # (a CA made on first use under var/signing), PemFileSigner or CallbackSigner (KMS / HSM).
    "SIGNER": "stackgan_django.provenance.signers.DevelopmentSigner",
    "SIGNER_OPTIONS": {},
    # A timestamp authority; when it cannot be reached the request waits as "signing pending".
    "TSA_URL": None,
    # Extra PEM files of trusted roots for verification (e.g. a previous signing CA).
    "TRUST_ANCHORS": [],
    # Only a hash of the caption goes into the manifest unless this is True.
    "INCLUDE_CAPTION_IN_MANIFEST": False,
    # The cawg.training-mining wish recorded in every file: "notAllowed", "allowed" or "constrained".
    "TRAINING_MINING": "notAllowed",
    # Secret for the invisible watermark and pseudonymous ids; None = derived from SECRET_KEY.
    "WATERMARK_KEY": None,
    "WATERMARK_STRENGTH": 2.0,
    # The check of each file right after the worker signs it: "every" runs the c2pa library's full
    # validation on every file; "first" runs it on the first file a worker process signs with its
    # signer, whenever the certificate changes, once a minute, and whenever the quick check fails,
    # and gives every other file a structural check (manifest present and bound to the stored
    # bytes, claim signature verified with the certificate found Trusted). See
    # provenance.manifests.stamp_image for why that loses nothing.
    "VERIFY_AFTER_SIGNING": "first",
    # -- pilot report (issue 15) --
    # What one hour of a generation worker's GPU costs, for the pilot report's cost per approved
    # image; None = not configured (the report then shows compute time only).
    "COST_PER_GPU_HOUR": None,
    "COST_CURRENCY": "USD",
    # -- API v1 (issue 11) --
    # Lifetime of a signed download URL handed to an API client.
    "SIGNED_URL_MAX_AGE": 300,
    # Per person (a key counts for its owner) and per scope, counted in the default cache; DRF's "N/second|minute|hour|day".
    "API_THROTTLE_RATES": {"assets": "600/minute", "files": "300/minute", "requests": "30/minute",
                           "request_status": "600/minute",
                           "verify": "30/minute", "anonymous": "60/minute", "policy_evaluation": "20/hour"},
    # Admin log-in (stackgan_django/throttling.py says why so): failures for one username from one
    # address within the window (seconds) lock that pair; an address has a much higher limit of its
    # own; and past a high ceiling per username (its own window), only clients that have failed
    # themselves are refused, so nobody can lock someone else out. A lock answers 429.
    "ADMIN_LOGIN_MAX_FAILURES": 5,
    "ADMIN_LOGIN_WINDOW_SECONDS": 300,
    "ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS": 50,
    "ADMIN_LOGIN_MAX_FAILURES_PER_USERNAME": 50,
    "ADMIN_LOGIN_USERNAME_WINDOW_SECONDS": 900,
    # Hostile input: JSON bodies nested deeper than this are refused before parsing; uploads to
    # verify are checked by their header before any pixel is decoded.
    "MAX_JSON_DEPTH": 20,
    "VERIFY_MAX_BYTES": 20 * 1024 * 1024,
    "VERIFY_MAX_PIXELS": MAX_CHECKED_PIXELS,  # the same as `python -m policies check-image`
    # PNG or WebP chunks, or JPEG segments (and stray bytes) before the first scan, that an upload
    # may hold: each costs a step of Python in Pillow or of the C2PA parser, so 20 MB of empty chunks
    # was 20 s of CPU. A 20 MB PNG written in libpng's 8 KB chunks has about 2,600.
    "VERIFY_MAX_SEGMENTS": 20_000,
    # The largest request body any page takes, from its Content-Length, before anything reads it
    # (stackgan_django.input_limits.RequestBodyLimitMiddleware): Django spools uploads to disk with no
    # bound of its own, for anyone (the CSRF check parses the body of a log-in POST). None: the
    # verify upload's limit plus its multipart envelope, the largest any page of this app needs.
    "MAX_REQUEST_BODY_BYTES": None,
    # Webhooks on approve and revoke: [{"url": ..., "secret": ..., "events": ["asset.approved", ...]}].
    "WEBHOOKS": [],
    "WEBHOOK_TIMEOUT_SECONDS": 10,
    "WEBHOOK_MAX_ATTEMPTS": 5,
    # First retry after this many seconds, doubling each time; the queue a worker must consume.
    "WEBHOOK_RETRY_BASE_SECONDS": 30,
    "WEBHOOK_QUEUE": "webhooks",
    # Anchors of the audit chain's head, outside the database (stackgan_django.audit): a file the
    # maintenance task appends to, every AUDIT_ANCHOR_SECONDS while the chain grows. None: no anchors.
    # Keep it where the database's administrators cannot rewrite it (or ship the log lines it also
    # writes, "audit chain head anchored", to a log store); verify_audit_chain checks them.
    "AUDIT_ANCHOR_FILE": None,
    "AUDIT_ANCHOR_SECONDS": 300,
    # Extra image checks of the output policy, by dotted path: callables image -> [policies.Decision].
    "OUTPUT_CHECKS": [],
}

IMPORT_STRINGS = ("GENERATOR_BACKEND", "SIGNER")
IMPORT_LISTS = ("OUTPUT_CHECKS",)


class AppSettings:
    def __init__(self, user_settings: dict[str, Any] | None = None):
        self._user_settings = user_settings
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        if self._user_settings is None:
            configured = getattr(settings, "STACKGAN", {}) or {}
            if not isinstance(configured, dict):
                raise ImproperlyConfigured("settings.STACKGAN must be a dict")
            unknown = sorted(set(configured) - set(DEFAULTS))
            if unknown:
                raise ImproperlyConfigured(
                    f"unknown STACKGAN setting(s): {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}"
                )
            self._user_settings = configured
        return self._user_settings

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"no STACKGAN setting {name!r}")
        if name in self._cache:
            return self._cache[name]
        value = self.user_settings.get(name, DEFAULTS[name])
        if name in IMPORT_STRINGS and isinstance(value, str):
            try:
                value = import_string(value)
            except ImportError as exc:
                raise ImproperlyConfigured(f"STACKGAN[{name!r}] = {value!r} cannot be imported: {exc}") from exc
        if name in IMPORT_LISTS:
            if not isinstance(value, (list, tuple)):
                raise ImproperlyConfigured(f"STACKGAN[{name!r}] must be a list of dotted paths, got {value!r}")
            try:
                value = [import_string(item) if isinstance(item, str) else item for item in value]
            except ImportError as exc:
                raise ImproperlyConfigured(f"STACKGAN[{name!r}]: {exc}") from exc
        self._cache[name] = value
        return value

    def reload(self) -> None:
        self._user_settings = None
        self._cache.clear()


app_settings = AppSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "STACKGAN":
        app_settings.reload()


def connect_signals() -> None:
    setting_changed.connect(_reload, dispatch_uid="stackgan_django.conf.reload")
