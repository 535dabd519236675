"""API keys: created (the secret shown once, only a hash kept), listed and revoked, each step audited."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from stackgan_django.audit import record_event
from stackgan_django.models import ApiKey
from stackgan_django.services.errors import WorkflowError

KEY_SCOPES = tuple(ApiKey.Scope.values)


# About 100 years: any longer is "no expiry", which leaving the expiry out already says.
MAX_EXPIRY_DAYS = 36_500


class InvalidApiKey(WorkflowError):
    pass


def check_expiry(expires_at: datetime | None) -> None:
    """An expiry must lie ahead, and within MAX_EXPIRY_DAYS (None: the key does not expire). The same
    rule for the command, the admin's form and this module: a key born expired is a mistake, and a
    date in the year 9999 is "never" written so that date arithmetic on it overflows."""
    if expires_at is None:
        return
    now = timezone.now()
    if expires_at <= now:
        raise InvalidApiKey("The expiry lies in the past; choose a later one, or revoke a key to stop it.")
    if expires_at > now + timedelta(days=MAX_EXPIRY_DAYS):
        raise InvalidApiKey(f"The expiry is more than {MAX_EXPIRY_DAYS:,} days away; leave it empty for a key "
                            "that does not expire.")


def create_api_key(user: Any, name: str, scopes: list[str] | tuple[str, ...], expires_at: datetime | None = None,
                   actor: Any = None) -> tuple[ApiKey, str]:
    """A new key for ``user``; returns the row and the secret, which is never stored or shown again."""
    unknown = sorted(set(scopes) - set(KEY_SCOPES))
    if unknown:
        raise InvalidApiKey(f"Unknown scope(s) {', '.join(unknown)}; choose from {', '.join(KEY_SCOPES)}.")
    if not scopes:
        raise InvalidApiKey(f"Give the key at least one scope: {', '.join(KEY_SCOPES)}.")
    if not name or len(name) > 50:
        raise InvalidApiKey("Name the key (1 to 50 characters), e.g. after the client that will use it.")
    if user is None or not getattr(user, "pk", None):
        raise InvalidApiKey("A key must belong to a user; the user's permissions apply to it.")
    check_expiry(expires_at)
    with transaction.atomic():
        api_key, secret = ApiKey.objects.create_key(user=user, name=name, scopes=sorted(set(scopes)), expiry_date=expires_at)
        record_event("api_key.created", None, actor or user, prefix=api_key.prefix, user=user.get_username(),
                     scopes=api_key.scopes, expires_at=expires_at.isoformat() if expires_at else None)
    return api_key, secret


def revoke_api_key(prefix: str, actor: Any = None) -> ApiKey:
    """Revocation is final (the library refuses to undo it) and takes effect on the next request."""
    with transaction.atomic():
        api_key = ApiKey.objects.select_for_update().filter(prefix=prefix).first()
        if api_key is None:
            raise InvalidApiKey(f"There is no API key with the prefix {prefix!r}.")
        if not api_key.revoked:
            api_key.revoked = True
            api_key.save(update_fields=["revoked"])
            record_event("api_key.revoked", None, actor, prefix=prefix, user=api_key.user.get_username())
    return api_key
