"""The policy set in force, loaded from STACKGAN["POLICY_DIR"] and reloaded when its files change."""

from __future__ import annotations

import logging
from pathlib import Path
from threading import Lock

from policies import DEFAULT_DIR, PolicyError, PolicySet, load_policies
from policies.embedding import set_vector_cache_dir
from stackgan_django.conf import app_settings

logger = logging.getLogger(__name__)
_lock = Lock()
_cached: tuple[tuple, PolicySet] | None = None


def policy_folder() -> Path:
    return Path(app_settings.POLICY_DIR) if app_settings.POLICY_DIR else DEFAULT_DIR


def _stamp(folder: Path) -> tuple:
    # Compliance staff edit the files in place: any change of size or mtime reloads them.
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.glob("*.toml")))


def current_policies() -> PolicySet:
    """The loaded policy set; raises PolicyError if the files are broken (callers fail closed)."""
    global _cached
    folder = policy_folder()
    try:
        stamp = (str(folder), _stamp(folder))
    except OSError as exc:
        raise PolicyError(f"policy folder {folder} cannot be read: {exc}") from exc
    with _lock:
        if _cached is None or _cached[0] != stamp:
            if app_settings.POLICY_CACHE_DIR is not None:
                set_vector_cache_dir(app_settings.POLICY_CACHE_DIR or None)
            _cached = (stamp, load_policies(folder))
            logger.info("loaded policies from %s, version %s", folder, _cached[1].version[:12])
        return _cached[1]
