"""Who may see which requests and images: an editor sees their own; everyone's only with
``view_all_requests``; reviewers see every asset (reviewing them is their job). One place, so the
lists, the pages, the live status and the image view can never disagree."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from stackgan_django.models import Asset, GenerationRequest

VIEW_ALL_REQUESTS = "stackgan_django.view_all_requests"
REVIEW_ASSET = "stackgan_django.review_asset"
VIEW_ASSET = "stackgan_django.view_asset"


def sees_every_request(user: Any) -> bool:
    return user.has_perm(VIEW_ALL_REQUESTS)


def visible_requests(user: Any, queryset: QuerySet[GenerationRequest] | None = None) -> QuerySet[GenerationRequest]:
    queryset = GenerationRequest.objects.all() if queryset is None else queryset
    if not getattr(user, "is_authenticated", False):
        return queryset.none()
    if sees_every_request(user):
        return queryset
    return queryset.filter(requested_by=user)


def visible_assets(user: Any, queryset: QuerySet[Asset] | None = None) -> QuerySet[Asset]:
    queryset = Asset.objects.all() if queryset is None else queryset
    if not getattr(user, "is_authenticated", False) or not user.has_perm(VIEW_ASSET):
        return queryset.none()
    if user.has_perm(REVIEW_ASSET) or sees_every_request(user):
        return queryset
    return queryset.filter(request__requested_by=user)
