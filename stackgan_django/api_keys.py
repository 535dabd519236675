"""How an API client proves who it is and what it may do: ``Authorization: Api-Key <prefix>.<secret>``
authenticates as the key's user (so Django's model permissions apply), and each view names the scope
the key must carry (djangorestframework-api-key keeps the keys hashed)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from stackgan_django.models import ApiKey

KEYWORD = "Api-Key"
MAX_KEY_LENGTH = 100


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Unknown, revoked and expired keys are 401 with a message that says which."""

    def authenticate(self, request) -> tuple[Any, ApiKey] | None:
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        try:
            keyword, _, key = header.decode("ascii").partition(" ")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The Authorization header must be ASCII.") from None
        if keyword.lower() != KEYWORD.lower():
            return None
        key = key.strip()
        prefix, dot, _ = key.partition(".")
        if not dot or not prefix or len(key) > MAX_KEY_LENGTH:
            raise exceptions.AuthenticationFailed("Malformed API key; it looks like <prefix>.<secret>.")
        api_key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
        if api_key is None or not api_key.is_valid(key):
            raise exceptions.AuthenticationFailed("Unknown API key.")
        if api_key.revoked:
            raise exceptions.AuthenticationFailed("This API key was revoked.")
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed(f"This API key expired on {api_key.expiry_date:%Y-%m-%d %H:%M} UTC.")
        if not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("The user this API key belongs to is inactive.")
        return api_key.user, api_key

    def authenticate_header(self, request) -> str:
        return KEYWORD


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """The admin's log-in session, for staff only. The admin refuses a user whose staff status was
    removed; the API shares the session cookie, so without this such a user would keep every API
    permission their groups give until the session expired."""

    def authenticate(self, request):
        found = super().authenticate(request)
        if found is None or not found[0].is_staff:
            return None
        return found


class ScopeAndModelPermission(permissions.BasePermission):
    """The view's ``required_scopes`` / ``required_perms`` (per HTTP method, ``"*"`` for any): a key
    must carry the scope, and its user (or the session's user) must hold the Django permissions."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        scope = _for_method(getattr(view, "required_scopes", {}), request.method)
        if scope and isinstance(request.auth, ApiKey) and not request.auth.has_scope(scope):
            self.message = f"This API key lacks the scope '{scope}'."
            return False
        perms = _for_method(getattr(view, "required_perms", {}), request.method) or ()
        if not user.has_perms(perms):
            self.message = f"Your user lacks the permission(s) {', '.join(perms)}."
            return False
        return True


def _for_method(table: dict[str, Any], method: str) -> Any:
    return table.get(method, table.get("*"))


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """The key as drf-spectacular documents it (a security scheme clients can generate code from)."""

    target_class = "stackgan_django.api_keys.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Api-Key <prefix>.<secret>`, from the admin or `manage.py api_keys create`"}


class StaffSessionScheme(OpenApiAuthenticationExtension):
    """The session cookie as drf-spectacular documents its parent class."""

    target_class = "stackgan_django.api_keys.StaffSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema) -> dict[str, str]:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid",
                "description": "the admin's session (staff users only), with the CSRF token on writes"}
