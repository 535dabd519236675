"""Human formats for the editor's and reviewer's pages: durations, hashes, times, licences."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

register = template.Library()


@register.filter
def duration(seconds: Any) -> str:
    """2.7029713549999883 -> "2.7 s"; 75.2 -> "1 min 15 s"; None -> "-"."""
    if seconds is None or seconds == "":
        return "-"
    seconds = float(seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@register.filter
def short_hash(value: Any, length: int = 12) -> str:
    """The start of a hash with the whole of it on hover and for copying."""
    if not value:
        return "-"
    value = str(value)
    if len(value) <= length:
        return value
    return format_html('<code class="sg-hash" title="{}">{}…</code>', value, value[:length])


@register.filter
def when(value: datetime | None) -> str:
    """"30 Nov 2026, 12:34 (5 minutes ago)" in the site's time zone."""
    if not value:
        return "-"
    local = timezone.localtime(value)
    ago = timesince(value, timezone.now()).split(",")[0]
    return format_html('<time datetime="{}">{} ({} ago)</time>', value.isoformat(), local.strftime("%-d %b %Y, %H:%M"), ago)


@register.filter
def thousands(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}"


@register.filter
def percent(value: Any) -> str:
    """0.4567 -> "45.7 %"."""
    if value is None:
        return "-"
    return f"{100 * float(value):.1f} %"


@register.filter
def image_url(asset: Any, which: str = "") -> str:
    """The authorised image view of an asset (generated files have no public URL)."""
    from stackgan_django.views_editor import asset_image_url

    return asset_image_url(asset, approved=which == "approved")


@register.inclusion_tag("stackgan_django/_nav.html", takes_context=True)
def desk_nav(context: template.Context) -> dict[str, Any]:
    """The links each role needs, shown only to those who may follow them."""
    from django.urls import reverse

    request = context.get("request")
    user = getattr(request, "user", None)
    links = []
    if user is not None and user.is_authenticated:
        has = user.has_perm
        candidates = [
            ("stackgan_django.add_generationrequest", "admin:stackgan_django_generationrequest_add", "Ask for images"),
            ("stackgan_django.view_generationrequest", "admin:stackgan_django_generationrequest_changelist", "Requests"),
            ("stackgan_django.review_asset", "admin:stackgan_django_asset_changelist", "Review desk"),
            ("stackgan_django.view_asset", "admin:stackgan_django_asset_verify", "Check a file"),
            ("stackgan_django.view_auditevent", "admin:stackgan_django_auditevent_changelist", "Audit log"),
            ("stackgan_django.view_pilot_report", "admin:stackgan_django_pilot_report", "Pilot report"),
        ]
        links = [(reverse(name), label) for perm, name, label in candidates if has(perm)]
        from stackgan_django.policy_evaluation import may_evaluate_policies

        if may_evaluate_policies(user):
            links.append((reverse("admin:stackgan_django_policy_evaluation"), "Test a policy"))
    return {"links": links, "current": getattr(request, "path", "")}
