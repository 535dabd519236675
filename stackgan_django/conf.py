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

PACKAGE_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, Any] = {
    # Where the pluggable generator lives; it must offer load(model_version) -> object with generate().
    "GENERATOR_BACKEND": "stackgan_django.generation.PipelineBackend",
    # "cuda", "cuda:1", "cpu", or None for CUDA when present.
    "DEVICE": None,
    # A local transformers folder; None = the packaged all-MiniLM-L6-v2.
    "TEXT_ENCODER_PATH": None,
    # The checkpoint the bootstrap command registers; None = the shipped model, else an untrained one.
    "MODEL_DIR": None,
    "MAX_IMAGES_PER_REQUEST": 8,
    "MAX_CAPTION_LENGTH": 1000,
    "MAX_SEED": 2**63 - 1,
    # Alias in settings.STORAGES that stores generated files, and the folder inside it.
    "STORAGE_ALIAS": "default",
    "STORAGE_PREFIX": "stackgan",
    # A folder of policy TOML files; None = the defaults shipped in policies/default/.
    "POLICY_DIR": None,
    # QUEUED or RUNNING longer than this: the sweeper re-enqueues (the broker may lose a message).
    "REQUEST_DEADLINE_SECONDS": 900,
    "MAX_ATTEMPTS": 3,
    "QUEUE": "gpu",
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
