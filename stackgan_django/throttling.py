"""Rate limits on the shared cache (local memory by default, Redis when configured): per API key (or
user, or address) and per scope for the API (and the admin pages that do the same work), and failed
admin log-ins."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Any

from django.contrib.auth import signals as auth_signals
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import SimpleRateThrottle

from stackgan_django.conf import app_settings


class ApiKeyScopeThrottle(SimpleRateThrottle):
    """The view's ``throttle_scope`` picks the rate in STACKGAN["API_THROTTLE_RATES"]; each key
    counts on its own, so one client's burst never uses up another's allowance."""

    def __init__(self) -> None:  # the rate depends on the view, known only in allow_request
        pass

    def allow_request(self, request, view) -> bool:
        self.scope = getattr(view, "throttle_scope", None)
        if not self.scope:
            return True
        user = getattr(request, "user", None)
        authenticated = bool(user and user.is_authenticated)
        rates = app_settings.API_THROTTLE_RATES or {}
        # Signed URLs are fetched without a key (a browser, a CDN): they count under their own scope
        # per address rather than under the small anonymous allowance.
        self.rate = rates.get(self.scope if authenticated or getattr(view, "throttle_anonymous_by_scope", False)
                              else "anonymous")
        if not self.rate:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view) -> str:
        from stackgan_django.models import ApiKey

        if isinstance(getattr(request, "auth", None), ApiKey):  # an admin page's HttpRequest has no .auth
            ident = f"key:{request.auth.prefix}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"addr:{self.get_ident(request)}"
        return f"stackgan:throttle:{self.scope}:{ident}"


def page_throttle_wait(request: HttpRequest, scope: str) -> int:
    """Seconds until an admin page that does the API's expensive work may be used again (0: now).

    The page counts under the API's rate for ``scope`` and under the same cache key as the user's
    own session calls to the API, so the admin page and the API share one allowance per person
    instead of each being a way round the other's limit."""
    throttle = ApiKeyScopeThrottle()
    if throttle.allow_request(request, SimpleNamespace(throttle_scope=scope)):
        return 0
    return max(1, math.ceil(throttle.wait() or 1))


# -- admin log-in ---------------------------------------------------------------------------------

def _client_address(request: HttpRequest) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is the client's to forge unless a proxy the operator trusts
    # rewrites it (then the proxy should set REMOTE_ADDR, e.g. gunicorn --forwarded-allow-ips).
    return request.META.get("REMOTE_ADDR") or "unknown"


def _failure_keys(request: HttpRequest, username: str | None) -> list[str]:
    keys = [f"stackgan:login-failures:addr:{_client_address(request)}"]
    if username:
        keys.append(f"stackgan:login-failures:user:{username.strip().lower()[:150]}")
    return keys


def _failures(key: str) -> list[float]:
    window = app_settings.ADMIN_LOGIN_WINDOW_SECONDS
    now = time.time()
    return [t for t in cache.get(key, []) if now - t < window]


def login_blocked_for(request: HttpRequest, username: str | None) -> int:
    """Seconds until another attempt is allowed (0: allowed now)."""
    limit, window = app_settings.ADMIN_LOGIN_MAX_FAILURES, app_settings.ADMIN_LOGIN_WINDOW_SECONDS
    wait = 0
    for key in _failure_keys(request, username):
        failures = _failures(key)
        if len(failures) >= limit:
            wait = max(wait, int(window - (time.time() - failures[-limit])) + 1)
    return wait


def record_login_failure(sender: Any = None, credentials: dict[str, Any] | None = None,
                         request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``user_login_failed`` receiver: remembers the failure for the address and the username."""
    if request is None:
        return
    username = (credentials or {}).get("username")
    for key in _failure_keys(request, username):
        cache.set(key, [*_failures(key), time.time()], timeout=app_settings.ADMIN_LOGIN_WINDOW_SECONDS)


def connect_signals() -> None:
    auth_signals.user_login_failed.connect(record_login_failure, dispatch_uid="stackgan_django.throttling.login")


def throttled_login(login_view):
    """Wraps the admin site's login view: a POST from an address or for a username that failed too
    often within the window is answered 429 (with Retry-After) without checking the password."""

    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            wait = login_blocked_for(request, request.POST.get("username"))
            if wait:
                response = HttpResponse(
                    f"Too many failed log-in attempts. Try again in {wait} seconds.",
                    status=429, content_type="text/plain; charset=utf-8")
                response["Retry-After"] = str(wait)
                return response
        return login_view(request, *args, **kwargs)

    return view
