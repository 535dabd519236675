"""Rate limits on the shared cache (local memory by default, Redis when configured): per person (the
API key's owner, the signed-in user, or the address) and per scope for the API (and the admin pages that do the same work), and failed
admin log-ins."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
import unicodedata
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth import signals as auth_signals
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from stackgan_django.conf import app_settings


def client_address(request: HttpRequest) -> str:
    """The client's address, for every rate limit (the API's and the admin log-in's).

    REMOTE_ADDR, unless REST_FRAMEWORK["NUM_PROXIES"] (DJANGO_TRUSTED_PROXIES) says that many proxies
    of ours stand in front: then the X-Forwarded-For hop the outermost of them appended. Anything
    else in that header is the client's to write, and DRF, left to itself (NUM_PROXIES None), would
    take all of it: a forged address per request was a fresh allowance per request."""
    remote = request.META.get("REMOTE_ADDR") or "unknown"
    proxies = api_settings.NUM_PROXIES or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies <= 0 or not forwarded:
        return remote
    hops = forwarded.split(",")
    hop = hops[-min(proxies, len(hops))].strip()  # as DRF reads it
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        # Not what a proxy writes: a misconfigured chain, the text the client's. Count it as the
        # proxy's own rather than as a new client per text.
        return remote


class ApiKeyScopeThrottle(SimpleRateThrottle):
    """The view's ``throttle_scope`` picks the rate in STACKGAN["API_THROTTLE_RATES"]; each person
    counts on their own, so one client's burst never uses up another's allowance.

    The allowance belongs to the key's owner, not to the key: a user who holds (or creates) several
    keys shares one allowance among them and their own session, as GitHub counts a user's tokens
    together. Counting per key let anyone with the right to make keys multiply their rate."""

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

    def get_ident(self, request) -> str:
        return client_address(request)

    def get_cache_key(self, request, view) -> str:
        from stackgan_django.models import ApiKey

        key = getattr(request, "auth", None)  # an admin page's HttpRequest has no .auth
        if isinstance(key, ApiKey):
            ident = f"user:{key.user_id}"
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
#
# Who is locked out by failed log-ins, and why so:
#
# * username + address (ADMIN_LOGIN_MAX_FAILURES, 5 per ADMIN_LOGIN_WINDOW_SECONDS): the lock a
#   client earns with its own failures. Keying it on the username alone let anyone lock any
#   account out (five bad POSTs for "REVIEWER " and the reviewer's correct password was 429 too);
#   keying it on the pair leaves the person at their own desk unaffected by someone else's guesses.
# * address (ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS, 50 per window): one address trying many
#   usernames. Much higher than the pair's limit because an office behind one NAT address shares it.
# * username (ADMIN_LOGIN_MAX_FAILURES_PER_USERNAME, 50 per ADMIN_LOGIN_USERNAME_WINDOW_SECONDS):
#   a ceiling against guessing one password from many addresses. Past it only clients that have
#   failed themselves within the window are refused, so an attacker with many addresses gets one
#   guess per address, and the owner, typing the right password from a clean address, gets in.
#
# Usernames count as authentication resolves them (``login_username``): the log-in form strips and
# NFKC-normalises what was typed before the password check, so "ｅｄｉｔｏｒ" (fullwidth) signs in as
# "editor" and must count as "editor", or every look-alike spelling is another five guesses. Case is
# folded as well, although the default user lookup is case-sensitive: a coarser bucket can only put
# two names under one lock, never split one account's failures across two.

def login_username(typed: str | None) -> str:
    """The name the log-in counters use for ``typed``: stripped and NFKC-normalised as Django's
    log-in form (``UsernameField``) and ``AbstractBaseUser.normalize_username`` do, then case-folded.

    The same for the raw POST (checked before the form runs) and for the form's already normalised
    name (``user_login_failed``), so both sides count in one bucket."""
    name = (typed or "").strip()
    limit = _username_max_length()
    if len(name) > limit:
        # The form refuses it before any password check (and skips the normalisation, slow on some
        # platforms for a long text): it can sign in as nobody.
        return name[:limit]
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold()).strip()


def _username_max_length() -> int:
    model = get_user_model()
    return model._meta.get_field(model.USERNAME_FIELD).max_length or 254  # as AuthenticationForm


def _digest(text: str) -> str:
    # A typed username may hold anything (spaces, control characters); cache keys must not.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class _Counter:
    key: str
    limit: int
    window: int


def _counters(request: HttpRequest, username: str | None) -> dict[str, _Counter]:
    address = client_address(request)
    window = app_settings.ADMIN_LOGIN_WINDOW_SECONDS
    counters = {"address": _Counter(f"stackgan:login-failures:addr:{_digest(address)}",
                                    app_settings.ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS, window)}
    name = login_username(username)
    if name:
        counters["pair"] = _Counter(f"stackgan:login-failures:pair:{_digest(name + chr(0) + address)}",
                                    app_settings.ADMIN_LOGIN_MAX_FAILURES, window)
        counters["username"] = _Counter(f"stackgan:login-failures:user:{_digest(name)}",
                                        app_settings.ADMIN_LOGIN_MAX_FAILURES_PER_USERNAME,
                                        app_settings.ADMIN_LOGIN_USERNAME_WINDOW_SECONDS)
    return counters


def _failures(counter: _Counter) -> list[float]:
    now = time.time()
    return [t for t in cache.get(counter.key, []) if now - t < counter.window]


def _wait(counter: _Counter, failures: list[float]) -> int:
    if len(failures) < counter.limit:
        return 0
    return int(counter.window - (time.time() - failures[-counter.limit])) + 1


def login_blocked_for(request: HttpRequest, username: str | None) -> int:
    """Seconds until another attempt is allowed (0: allowed now)."""
    counters = _counters(request, username)
    failures = {name: _failures(counter) for name, counter in counters.items()}
    wait = max(_wait(counters[name], failures[name]) for name in ("address", "pair") if name in counters)
    client_has_failed = bool(failures["address"])
    if "username" in counters and client_has_failed:
        wait = max(wait, _wait(counters["username"], failures["username"]))
    return wait


def record_login_failure(sender: Any = None, credentials: dict[str, Any] | None = None,
                         request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``user_login_failed`` receiver: counts the failure for the address, the pair and the username."""
    if request is None:
        return
    for counter in _counters(request, (credentials or {}).get("username")).values():
        # Only the last ``limit`` failures decide a wait, so no list grows past that.
        recent = [*_failures(counter), time.time()][-max(1, counter.limit):]
        cache.set(counter.key, recent, timeout=counter.window)


def connect_signals() -> None:
    auth_signals.user_login_failed.connect(record_login_failure, dispatch_uid="stackgan_django.throttling.login")


def throttled_login(login_view):
    """Wraps the admin site's login view: a POST that the counters above refuse is answered 429
    (with Retry-After) without checking the password."""

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
