"""Manage API keys: ``create USER NAME --scope assets:read [--expires-in-days N]`` prints the secret
once; ``list`` shows prefixes, scopes and state; ``revoke PREFIX`` refuses the key from now on."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from stackgan_django import services
from stackgan_django.models import ApiKey
from stackgan_django.services.api_keys import MAX_EXPIRY_DAYS


class Command(BaseCommand):
    help = "Create, list and revoke API keys (scopes: " + ", ".join(ApiKey.Scope.values) + ")."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="a new key; the secret is printed once")
        create.add_argument("username", help="the key acts as this user (its permissions apply)")
        create.add_argument("name", help="what the key is for, e.g. the client's name")
        create.add_argument("--scope", action="append", choices=ApiKey.Scope.values, required=True,
                            help="repeat for several scopes")
        create.add_argument("--expires-in-days", type=int, default=None, help="no expiry when left out")
        sub.add_parser("list", help="every key: prefix, user, scopes, expiry, state")
        revoke = sub.add_parser("revoke", help="refuse a key from now on (final)")
        revoke.add_argument("prefix")

    def handle(self, *args, **options) -> None:
        action = options["action"]
        if action == "create":
            user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: options["username"]}).first()
            if user is None:
                raise CommandError(f"There is no user {options['username']!r}.")
            days = options["expires_in_days"]
            # An expiry past the calendar's end (a huge N) would overflow: leave it out for no expiry.
            if days is not None and not 1 <= days <= MAX_EXPIRY_DAYS:
                raise CommandError(f"--expires-in-days must be between 1 and {MAX_EXPIRY_DAYS} "
                                   "(leave it out for a key that does not expire).")
            expires = timezone.now() + timedelta(days=days) if days else None
            try:
                api_key, secret = services.create_api_key(user, options["name"], options["scope"], expires, actor="command")
            except services.InvalidApiKey as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"API key {api_key.prefix} for {user.get_username()} ({', '.join(api_key.scopes)}), "
                              f"expires {expires:%Y-%m-%d} UTC" if expires else
                              f"API key {api_key.prefix} for {user.get_username()} ({', '.join(api_key.scopes)}), no expiry")
            self.stdout.write("Store this secret now; it is not kept and cannot be shown again:")
            self.stdout.write(secret)
        elif action == "list":
            for api_key in ApiKey.objects.select_related("user").order_by("-created"):
                state = "revoked" if api_key.revoked else "expired" if api_key.has_expired else "active"
                expiry = f"{api_key.expiry_date:%Y-%m-%d}" if api_key.expiry_date else "never"
                self.stdout.write(f"{api_key.prefix}  {state:8} {api_key.user.get_username():15} "
                                  f"{','.join(api_key.scopes):40} expires {expiry}  {api_key.name}")
        elif action == "revoke":
            try:
                api_key = services.revoke_api_key(options["prefix"], actor="command")
            except services.InvalidApiKey as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"API key {api_key.prefix} revoked.")
