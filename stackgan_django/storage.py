"""Private storage for generated files: no URL of the storage backend ever reaches a page or a client.

The backend is pluggable (``STACKGAN["STORAGE"]``, a dotted path, with ``STACKGAN["STORAGE_OPTIONS"]``):
a local folder by default (``var/private``, outside MEDIA_ROOT and served by no route), any
django-storages backend (a private S3 bucket) in production. ``PrivateAssetStorage`` wraps it so that
``FieldFile.url`` names the app's authorised file view instead of the backend's own URL, and every
stored name is an HMAC of the proposed one: a name never leads to another asset's file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, Storage
from django.core.signals import setting_changed
from django.utils.module_loading import import_string


def default_private_location() -> Path:
    """``var/private`` beside the host's other runtime files (``settings.VAR_DIR`` when it has one)."""
    var_dir = getattr(settings, "VAR_DIR", None)
    return Path(var_dir) / "private" if var_dir else Path.cwd() / "var" / "private"


@lru_cache(maxsize=1)
def _configured_backend(dotted_path: str, options_items: tuple[tuple[str, Any], ...]) -> Storage:
    try:
        backend_class = import_string(dotted_path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"STACKGAN['STORAGE'] = {dotted_path!r} cannot be imported: {exc}") from exc
    options = dict(options_items)
    if issubclass(backend_class, FileSystemStorage):
        options.setdefault("location", str(default_private_location()))
        # A FileSystemStorage without base_url falls back to MEDIA_URL; the wrapper never asks it for
        # a URL, and None here makes a direct misuse fail instead of pointing at /media/.
        options.setdefault("base_url", None)
    try:
        return backend_class(**options)
    except TypeError as exc:
        raise ImproperlyConfigured(f"STACKGAN['STORAGE_OPTIONS'] do not fit {backend_class.__name__}: {exc}") from exc


def configured_backend() -> Storage:
    """The storage backend named in the settings (one instance per configuration)."""
    from stackgan_django.conf import app_settings

    options = app_settings.STORAGE_OPTIONS or {}
    if not isinstance(options, dict):
        raise ImproperlyConfigured("STACKGAN['STORAGE_OPTIONS'] must be a dict of the backend's arguments")
    return _configured_backend(app_settings.STORAGE, tuple(sorted((k, _hashable(v)) for k, v in options.items())))


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in ("STACKGAN", "VAR_DIR", "MEDIA_ROOT"):
        _configured_backend.cache_clear()


setting_changed.connect(_reset, dispatch_uid="stackgan_django.storage.reset")


class PrivateAssetStorage(Storage):
    """Everything goes to the configured backend except ``url``, which names the authorised view
    (login and a permission on the asset are checked there). One instance serves every settings
    change, because a model field keeps the storage object it was built with."""

    @property
    def backend(self) -> Storage:
        return configured_backend()

    def url(self, name: str | None) -> str:
        from django.urls import reverse

        return reverse("stackgan-staff-file", kwargs={"name": name})

    # -- delegation ---------------------------------------------------------------------------------
    def open(self, name: str, mode: str = "rb"):
        return self.backend.open(name, mode)

    def save(self, name: str | None, content, max_length: int | None = None) -> str:
        return self.backend.save(name, content, max_length=max_length)

    def delete(self, name: str) -> None:
        self.backend.delete(name)

    def exists(self, name: str) -> bool:
        return self.backend.exists(name)

    def size(self, name: str) -> int:
        return self.backend.size(name)

    def listdir(self, path: str):
        return self.backend.listdir(path)

    def path(self, name: str) -> str:
        return self.backend.path(name)

    def get_valid_name(self, name: str) -> str:
        return self.backend.get_valid_name(name)

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return self.backend.get_available_name(name, max_length=max_length)

    def generate_filename(self, filename: str) -> str:
        return self.backend.generate_filename(filename)

    def get_accessed_time(self, name: str):
        return self.backend.get_accessed_time(name)

    def get_created_time(self, name: str):
        return self.backend.get_created_time(name)

    def get_modified_time(self, name: str):
        return self.backend.get_modified_time(name)

    def deconstruct(self):
        return ("stackgan_django.storage.PrivateAssetStorage", (), {})


private_storage = PrivateAssetStorage()


def private_asset_name(instance: Any, filename: str) -> str:
    """``<prefix>/<2 hex>/<32 hex>.<ext>``: an HMAC (keyed by SECRET_KEY) of the name the caller
    proposed. The same proposal gives the same name, so a retried worker overwrites its own file,
    but without the key no name can be derived from another: a request id and index (what the
    worker proposes) never show, and one file's name leads to no other."""
    from django.utils.crypto import salted_hmac

    from stackgan_django.conf import app_settings

    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg", ".webp"):
        suffix = ".png"
    digest = salted_hmac("stackgan_django.storage.private_asset_name", filename or "", algorithm="sha256").hexdigest()[:32]
    prefix = (app_settings.STORAGE_PREFIX or "").strip("/")
    # The two-character folder keeps directories small on a local disk.
    return "/".join(part for part in (prefix, digest[:2], digest + suffix) if part)
