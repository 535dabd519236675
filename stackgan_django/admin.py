"""The admin as a product for editors and compliance staff: editors ask for images and watch them
appear; reviewers work through a review desk and decide on an asset page with everything on it;
the audit log shows whether its chain verifies; the pilot report answers "was it worth it".
Every change goes through stackgan_django.services; who sees what is decided in
stackgan_django.access."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.text import smart_split

from stackgan_django import services, views_editor
from stackgan_django.access import REVIEW_ASSET, sees_every_request, visible_assets, visible_requests
from stackgan_django.admin_changelist import GuardedChangeListMixin
from stackgan_django.conf import app_settings
from stackgan_django.disclosure import decision_category, requester_message, sees_policy_evidence
from stackgan_django.files import can_see_unapproved, held_for_review
from stackgan_django.input_limits import ImageRefused, check_image_header
from stackgan_django.models import Asset, AuditEvent, GenerationRequest, ModelVersion, PolicyDecision, Review
from stackgan_django.review_desk import (
    audit_trail,
    decision_rows,
    desk_order,
    provenance_panel,
    queue_neighbours,
    training_data_rows,
)
from stackgan_django.templatetags.stackgan_desk import duration, when
from stackgan_django.throttling import page_throttle_wait

STATE_CSS = {"policy_denied": "denied", "queued": "queued", "running": "running", "done": "done", "failed": "failed",
             "pending_review": "pending", "approved": "approved", "rejected": "rejected", "revoked": "revoked"}


def state_badge(value: str, label: str):
    return format_html('<span class="sg-badge sg-badge-{}">{}</span>', STATE_CSS.get(value, "none"), label)


def flag_text(flagged: bool):
    # A word, not a tick: a green tick for "flagged" read as "fine" to editors.
    return mark_safe('<span class="sg-flag" title="a policy rule asked for extra review">⚑ flagged</span>') if flagged else ""


# Words of an admin search that count (the API's caption filter counts 10 too). Each word is one
# more OR over the search fields, ANDed with the rest: about a thousand made SQLite refuse the query
# ("Expression tree is too large", a 500) and cost PostgreSQL a scan per word.
MAX_SEARCH_TERMS = 10


def bounded_search_term(search_term: str) -> str:
    """The first MAX_SEARCH_TERMS words of a search, quoted phrases kept whole, as Django splits them."""
    return " ".join(list(smart_split(search_term))[:MAX_SEARCH_TERMS])


class DeskMixin(GuardedChangeListMixin):
    """Pages of this app carry the desk's style sheet, script and role navigation, searches
    bounded to MAX_SEARCH_TERMS words, and the change-list guards every admin of the app has."""

    class Media:
        css = {"all": ["stackgan_django/desk.css"]}
        js = ["stackgan_django/desk.js"]

    def get_search_results(self, request, queryset, search_term):
        return super().get_search_results(request, queryset, bounded_search_term(search_term))


# -- editors: requests ----------------------------------------------------------------------------

class RequesterFilter(admin.SimpleListFilter):
    """"My requests" by default; everyone's only for those allowed to see them."""

    title = "requested by"
    parameter_name = "who"

    def lookups(self, request, model_admin):
        return [("me", "Me"), ("all", "Everyone")]

    def value(self):
        return super().value() or "me"

    def choices(self, changelist):
        for lookup, title in self.lookup_choices:
            yield {"selected": self.value() == lookup, "display": title,
                   "query_string": changelist.get_query_string({self.parameter_name: lookup})}

    def queryset(self, request, queryset):
        return queryset if self.value() == "all" else queryset.filter(requested_by=request.user)


@admin.register(GenerationRequest)
class GenerationRequestAdmin(DeskMixin, admin.ModelAdmin):
    list_display = ("id", "caption", "state_label", "images", "flag", "requested_by", "created", "compute")
    list_display_links = ("id", "caption")
    list_filter = ("state", "flagged", "purpose")
    search_fields = ("caption",)
    actions = ["retry_selected"]
    change_list_template = "stackgan_django/request_change_list.html"
    # The "everyone" filter is in get_list_filter only for those who see every request; for the
    # others ?who=all is not refused with a 400 but ignored as before (Django asks again, ?e=1).
    allowed_extra_lookups = (RequesterFilter.parameter_name,)

    def get_queryset(self, request):
        return visible_requests(request.user, super().get_queryset(request)).select_related("requested_by")

    def get_list_filter(self, request):
        return ((RequesterFilter,) if sees_every_request(request.user) else ()) + tuple(self.list_filter)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("pilot-report/", wrap(self.pilot_report_view), name="stackgan_django_pilot_report"),
            path("<int:object_id>/status/", wrap(lambda r, object_id: views_editor.request_status_view(self, r, object_id)),
                 name="stackgan_django_generationrequest_status"),
            path("<int:object_id>/again/", wrap(lambda r, object_id: views_editor.generate_again_view(self, r, object_id)),
                 name="stackgan_django_generationrequest_again"),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return views_editor.new_request_view(self, request, form_url, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return views_editor.request_page_view(self, request, object_id, form_url, extra_context)

    def has_change_permission(self, request, obj=None):
        return False  # requests are immutable once submitted; retry and "generate again" are services

    def has_delete_permission(self, request, obj=None):
        return False

    def has_retry_permission(self, request):
        # Editors retry their own failed requests (the list shows only theirs); staff who may change
        # requests retry anyone's they can see.
        return request.user.has_perm("stackgan_django.add_generationrequest") or \
            request.user.has_perm("stackgan_django.change_generationrequest")

    @admin.display(description="state", ordering="state")
    def state_label(self, obj):
        return state_badge(obj.state, obj.get_state_display())

    @admin.display(description="images", ordering="num_images")
    def images(self, obj):
        return obj.num_images

    @admin.display(description="flag", ordering="flagged")
    def flag(self, obj):
        return flag_text(obj.flagged)

    @admin.display(description="asked", ordering="created_at")
    def created(self, obj):
        return when(obj.created_at)

    @admin.display(description="compute", ordering="compute_seconds")
    def compute(self, obj):
        return duration(obj.compute_seconds)

    @admin.action(description="Retry the selected failed requests", permissions=["retry"])
    def retry_selected(self, request, queryset):
        # Each retry is a new generation (the usage policy runs again, images are drawn): it counts
        # under the person's `requests` rate, as the API, "Ask for images" and "Generate again" do,
        # or one selection of many failed requests would be a way round that allowance.
        retried = 0
        for generation_request in queryset:
            wait = page_throttle_wait(request, "requests")
            if wait:
                self.message_user(request, f"You have asked for images too often in a short time: {retried} of the "
                                  f"selected requests were queued again, the others were left as they are. Try "
                                  f"again in {wait} second{'s' if wait != 1 else ''}.", messages.ERROR)
                break
            try:
                services.retry_request(generation_request.pk, request.user)
                retried += 1
            except services.WorkflowError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if retried:
            self.message_user(request, f"{retried} request(s) queued again.", messages.SUCCESS)

    def pilot_report_view(self, request):
        from stackgan_django.reports.pilot import pilot_report_view

        if not request.user.has_perm("stackgan_django.view_pilot_report"):
            raise PermissionDenied
        return pilot_report_view(self, request)


# -- compliance: the review desk ------------------------------------------------------------------

class VerifyUploadForm(forms.Form):
    file = forms.FileField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text = (f"PNG, JPEG or WebP, up to {app_settings.VERIFY_MAX_BYTES // (1024 * 1024)} MB "
                                         f"and {app_settings.VERIFY_MAX_PIXELS:,} pixels")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        try:
            # The API's limits, judged from the header before a pixel is decoded: a 140 KB PNG
            # declaring 12,000 x 12,000 pixels would otherwise cost the web process gigabytes.
            check_image_header(upload)
        except ImageRefused as exc:
            raise forms.ValidationError(str(exc)) from None
        return upload


class ReviewNoteForm(admin.helpers.ActionForm):
    note = forms.CharField(required=False, label="Review note", widget=forms.TextInput(attrs={"size": 40}))


class ReviewStateFilter(admin.SimpleListFilter):
    """The desk opens on what is waiting: pending review unless another state is asked for."""

    title = "review state"
    parameter_name = "review"

    def lookups(self, request, model_admin):
        return [*Asset.State.choices, ("all", "All")]

    def value(self):
        return super().value() or Asset.State.PENDING_REVIEW

    def choices(self, changelist):
        for lookup, title in self.lookup_choices:
            yield {"selected": self.value() == lookup, "display": title,
                   "query_string": changelist.get_query_string({self.parameter_name: lookup})}

    def queryset(self, request, queryset):
        value = self.value()
        if value == "all":
            return queryset
        return queryset.filter(state=value) if value in Asset.State.values else queryset.none()


class FlaggedFilter(admin.SimpleListFilter):
    title = "flagged by policy"
    parameter_name = "flagged_by_policy"

    def lookups(self, request, model_admin):
        return [("yes", "Flagged"), ("no", "Not flagged")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(flagged=True)
        if self.value() == "no":
            return queryset.filter(flagged=False)
        return queryset


# The largest primary key any supported database stores (a signed 64-bit integer): a larger number
# in a query string would overflow SQLite's INTEGER, a 500 instead of an empty list.
MAX_ROW_ID = 2**63 - 1


def filter_by_row_id(queryset, field: str, value: str | None):
    """``queryset`` filtered on ``field`` = the row id in ``value``: unfiltered without a number (the
    filter is not set), empty for a number no row can have. ASCII digits only: ``str.isdigit``
    also accepts "²", which ``int`` refuses."""
    if not value or not value.isascii() or not value.isdigit():
        return queryset
    row_id = int(value)
    return queryset.filter(**{field: row_id}) if 0 < row_id <= MAX_ROW_ID else queryset.none()


class AssetRequesterFilter(admin.SimpleListFilter):
    title = "requester"
    parameter_name = "requester"

    def lookups(self, request, model_admin):
        from django.contrib.auth import get_user_model

        users = get_user_model().objects.filter(
            pk__in=visible_assets(request.user).values("request__requested_by")).order_by("username")
        return [(str(u.pk), u.get_username()) for u in users]

    def queryset(self, request, queryset):
        return filter_by_row_id(queryset, "request__requested_by_id", self.value())


class ModelVersionFilter(admin.SimpleListFilter):
    title = "model version"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        return [(str(m.pk), m.name) for m in ModelVersion.objects.order_by("name")]

    def queryset(self, request, queryset):
        return filter_by_row_id(queryset, "request__model_version_id", self.value())


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    note = forms.CharField(required=False, max_length=2000)


@admin.register(Asset)
class AssetAdmin(DeskMixin, admin.ModelAdmin):
    list_display = ("thumbnail", "caption", "state_label", "flag", "requester", "model_version_name", "created")
    list_display_links = ("thumbnail", "caption")
    list_filter = (ReviewStateFilter, FlaggedFilter, ModelVersionFilter, AssetRequesterFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("request__caption",)
    list_per_page = 50
    action_form = ReviewNoteForm
    actions = ["approve_selected", "reject_selected", "revoke_selected"]
    change_list_template = "stackgan_django/review_desk.html"

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related("request", "request__requested_by", "request__model_version")
        # desk_order annotates pending_rank; the change list orders by it unless a column is chosen.
        return desk_order(visible_assets(request.user, queryset))

    def get_changelist(self, request, **kwargs):
        from django.contrib.admin.views.main import ChangeList

        class DeskChangeList(ChangeList):
            def get_ordering(self, request, queryset):
                # With no column chosen, the desk order: pending first, flagged first, oldest first.
                if self.params.get("o"):
                    return super().get_ordering(request, queryset)
                return ["pending_rank", "-flagged", "created_at", "index", "pk"]

        return DeskChangeList

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("verify/", wrap(self.verify_view), name="stackgan_django_asset_verify"),
            path("<int:asset_id>/image/", wrap(views_editor.asset_image_view), name="stackgan_django_asset_image"),
            path("<int:asset_id>/review/", wrap(self.review_view), name="stackgan_django_asset_review"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The asset page: the image at full size beside the decision, and everything to decide on."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        asset = self._visible_asset(request, object_id)
        can_review = request.user.has_perm(REVIEW_ASSET)
        previous_id, next_id, pending_count, position = queue_neighbours(asset, self.get_queryset(request))
        training_rows, training_note = training_data_rows(asset.request.model_version)
        image_url = self._image_url(request, asset)
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": f"Asset {asset.pk}",
            "asset": asset, "gr": asset.request, "can_review": can_review and asset.state == Asset.State.PENDING_REVIEW,
            "can_revoke": can_review and asset.state == Asset.State.APPROVED,
            "state_badge": state_badge(asset.state, asset.get_state_display()),
            "provenance": provenance_panel(asset.provenance), "decisions": decision_rows(
                list(asset.request.decisions.all()) + list(asset.decisions.all()),
                full_evidence=sees_policy_evidence(request.user)),
            "training_rows": training_rows, "training_note": training_note,
            "reviews": asset.reviews.select_related("reviewer"), "audit": audit_trail(asset),
            "previous_id": previous_id, "next_id": next_id, "pending_count": pending_count, "position": position,
            "review_url": reverse("admin:stackgan_django_asset_review", args=[asset.pk]),
            "note_required": asset.flagged,
            "image_url": image_url,
            # An editor's flagged image before its review: say why it is not shown yet.
            "held": image_url is None and held_for_review(asset),
        }
        return TemplateResponse(request, "stackgan_django/asset_page.html", context)

    @staticmethod
    def _image_url(request, asset: Asset) -> str | None:
        """The approved file of an approved asset, else the generated one; None where the image
        view would refuse it (an editor's rejected or revoked asset)."""
        approved = asset.state == Asset.State.APPROVED and bool(asset.approved_file)
        if not views_editor.asset_image_allowed(request.user, asset, approved):
            return None
        return views_editor.asset_image_url(asset, approved=approved)

    def _visible_asset(self, request, object_id) -> Asset:
        try:
            pk = int(object_id)
        except (TypeError, ValueError):
            raise Http404("No such asset.") from None
        asset = self.get_queryset(request).filter(pk=pk).first()
        if asset is None:
            raise Http404("No such asset.")
        return asset

    def review_view(self, request, asset_id):
        """Approve, reject or revoke from the asset page, through the services; then the next
        asset waiting in the queue."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(REVIEW_ASSET):
            raise PermissionDenied
        asset = self._visible_asset(request, asset_id)
        decision, note = request.POST.get("decision"), request.POST.get("note", "").strip()
        service = {"approve": services.approve_asset, "reject": services.reject_asset,
                   "revoke": services.revoke_asset}.get(decision)
        if service is None:
            messages.error(request, "Choose approve or reject.")
            return redirect("admin:stackgan_django_asset_change", asset.pk)
        try:
            decided = service(asset.pk, request.user, note[:2000])
        except services.NoteRequired as exc:
            messages.error(request, str(exc))
            return redirect("admin:stackgan_django_asset_change", asset.pk)
        except services.WorkflowError as exc:
            # Another reviewer decided first, or the asset was already decided: say so, change nothing.
            messages.error(request, str(exc))
            return redirect("admin:stackgan_django_asset_change", asset.pk)
        messages.success(request, f"Asset {decided.pk} {decided.get_state_display().lower()}.")
        _, next_id, _, _ = queue_neighbours(decided, self.get_queryset(request))
        if next_id is not None and decision != "revoke":
            return redirect("admin:stackgan_django_asset_change", next_id)
        if decision == "revoke":
            return redirect("admin:stackgan_django_asset_change", decided.pk)
        messages.info(request, "The review queue is empty.")
        return redirect("admin:stackgan_django_asset_changelist")

    def verify_view(self, request):
        """Compliance staff upload any file and see first whether it is an approved asset of ours,
        then whether it is unaltered and who signed it."""
        if not request.user.has_perm("stackgan_django.view_asset"):
            raise PermissionDenied
        # The API's rate for verification: each check decodes an image and reads its manifests.
        wait = page_throttle_wait(request, "verify") if request.method == "POST" else 0
        # Bound on every POST, even an empty one, so a missing file is an error the page shows.
        form = VerifyUploadForm(request.POST, request.FILES) if request.method == "POST" and not wait else VerifyUploadForm()
        report = panel = verdict = None
        if request.method == "POST" and not wait and form.is_valid():
            # Editors hold view_asset too; only reviewers learn about our non-approved assets.
            report = services.verify_file(form.cleaned_data["file"].read(),
                                          disclose_unapproved=can_see_unapproved(request.user))
            panel = provenance_panel(report)
            verdict = verify_verdict(report)
        context = {**self.admin_site.each_context(request), "title": "Check a file's provenance", "form": form,
                   "report": report, "provenance": panel, "verdict": verdict, "opts": self.model._meta,
                   "error": f"Too many files checked in a short time; try again in {wait} seconds." if wait else None}
        response = TemplateResponse(request, "stackgan_django/verify.html", context, status=429 if wait else 200)
        if wait:
            response["Retry-After"] = str(wait)
        return response

    @admin.display(description="caption", ordering="request__caption")
    def caption(self, asset):
        return asset.request.caption

    @admin.display(description="state", ordering="state")
    def state_label(self, asset):
        return state_badge(asset.state, asset.get_state_display())

    @admin.display(description="flag", ordering="flagged")
    def flag(self, asset):
        return flag_text(asset.flagged)

    @admin.display(description="requester", ordering="request__requested_by__username")
    def requester(self, asset):
        return asset.request.requested_by or "-"

    @admin.display(description="model", ordering="request__model_version__name")
    def model_version_name(self, asset):
        return asset.request.model_version.name if asset.request.model_version else "-"

    @admin.display(description="made", ordering="created_at")
    def created(self, asset):
        return when(asset.created_at)

    def get_list_display(self, request):
        # The thumbnail depends on who looks (an editor's rejected image is not served to them); a
        # column callable sees only the row, so it is bound to this request's user here.
        return tuple(self._thumbnail_for(request.user) if name == "thumbnail" else name
                     for name in super().get_list_display(request))

    def get_list_display_links(self, request, list_display):
        by_name = {getattr(item, "__name__", item): item for item in list_display}
        return [by_name[name] for name in self.list_display_links if name in by_name]

    @admin.display(description="image")
    def thumbnail(self, asset):
        return "-"  # a stand-in for the admin's checks; get_list_display puts the per-user column here

    def _thumbnail_for(self, user):
        @admin.display(description="image")
        def thumbnail(asset):
            if not asset.file:
                return "-"
            if not views_editor.asset_image_allowed(user, asset):
                if held_for_review(asset):
                    return format_html('<span class="sg-withdrawn" title="{}">held for review</span>',
                                       "you will see it once a reviewer approves it")
                return format_html('<span class="sg-withdrawn" title="no longer shown">{}</span>', asset.get_state_display())
            return format_html('<img src="{}" width="64" height="64" alt="asset {}" loading="lazy">',
                               views_editor.asset_image_url(asset), asset.pk)

        return thumbnail

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_review_permission(self, request):
        return request.user.has_perm(REVIEW_ASSET)

    @admin.action(description="Approve selected assets (one audited approval each)", permissions=["review"])
    def approve_selected(self, request, queryset):
        approved, refused = services.approve_assets(list(queryset.values_list("pk", flat=True)), request.user,
                                                    request.POST.get("note", "").strip())
        for message in refused.values():
            self.message_user(request, message, messages.WARNING)
        if approved:
            self.message_user(request, f"{len(approved)} asset(s) approved.", messages.SUCCESS)

    def _apply(self, request, queryset, service, verb):
        note = request.POST.get("note", "").strip()
        done = 0
        for asset in queryset:
            try:
                service(asset.pk, request.user, note)
                done += 1
            except services.WorkflowError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if done:
            self.message_user(request, f"{done} asset(s) {verb}.", messages.SUCCESS)

    @admin.action(description="Reject selected assets (note required)", permissions=["review"])
    def reject_selected(self, request, queryset):
        self._apply(request, queryset, services.reject_asset, "rejected")

    @admin.action(description="Revoke selected approved assets (note required)", permissions=["review"])
    def revoke_selected(self, request, queryset):
        self._apply(request, queryset, services.revoke_asset, "revoked")


def _asset_name(asset: dict) -> str | None:
    """How the page names the asset: its row for reviewers, its public id for editors (who see no
    row ids), nothing when neither is disclosed."""
    if asset.get("id"):
        return f"#{asset['id']}"
    return str(asset["public_id"]) if asset.get("public_id") else None


def verify_verdict(report: dict) -> dict:
    """The first thing the verify page says: is this file an approved asset of ours?"""
    asset = report.get("asset")
    state = report.get("state")
    name = _asset_name(asset) if asset else None
    if asset and asset.get("state") == "unconfirmed":
        # A mark of ours on another picture (services.verification): never headline it as the asset.
        return {"css": "rejected", "headline": "NOT an approved asset: it carries a mark of ours, but its picture "
                                               "is not the asset's.",
                "detail": asset.get("message", "") + " Do not publish it."}
    if asset and asset.get("state") == Asset.State.APPROVED and asset.get("exact_file"):
        if state == "Trusted":
            return {"css": "approved", "headline": f"Approved asset {name} of ours, unaltered.",
                    "detail": "It may be published under the asset's terms."}
        return {"css": "pending", "headline": f"Approved asset {name} of ours, but this file's provenance is {state}.",
                "detail": "It is byte for byte the file we approved (found by its hash), yet its manifest no longer "
                          "verifies against our trust anchors; check the signing configuration."}
    if asset and asset.get("state") == Asset.State.APPROVED and state == "Trusted":
        # Found by the watermark alone, yet a trusted signature: not ours (our signature on the
        # approved pixels is the approved file, found by its hash), but another certificate our
        # anchors vouch for, over pixels that are only near the asset's (an edit the picture check
        # does not see, such as a line of text, can be among them).
        return {"css": "pending", "headline": f"NOT the file we approved: it carries the mark of our approved asset "
                                              f"{name}, but another signer's manifest.",
                "detail": "Its picture is close to the asset's, yet it was changed and signed again after we approved it; "
                          "compare it with the approved file before using it."}
    if asset and asset.get("state") == Asset.State.APPROVED:
        # Found by the watermark (and the picture check): it says where the pixels came from, not
        # that nothing was added to them, so the asset's approval is never this file's.
        return {"css": "pending", "headline": f"A copy derived from approved asset {name}; this file itself is not the "
                                              "approved file and carries no valid provenance.",
                "detail": f"Found by its watermark; its provenance is {state}. It may have been re-encoded or altered "
                          "(text or marks drawn on it): compare it with the approved file, and publish that instead."}
    if asset and asset.get("state") == Asset.State.REVOKED:
        revoked = f"our asset {name}" if name else "the asset of ours it comes from"
        return {"css": "rejected", "headline": f"NOT approved: {revoked} was revoked.",
                "detail": f"Revoked {asset.get('revoked_at') or ''}: {asset.get('reason') or 'no reason recorded'}. "
                          "Do not publish it."}
    if asset and name:
        label = Asset.State(asset["state"]).label.lower() if asset.get("state") in Asset.State.values else asset.get("state")
        return {"css": "rejected", "headline": f"NOT approved: our asset {name} is {label}.",
                "detail": "Do not publish it."}
    if asset:
        # Editors are not told which unapproved asset, nor its state (services.verification).
        return {"css": "rejected", "headline": "NOT approved: the file comes from an asset of ours that is not approved.",
                "detail": "Which asset, and why, only reviewers see. Do not publish it."}
    return {"css": "none", "headline": "Not one of our assets.",
            "detail": "No asset of ours matches this file by hash or by watermark."}


# -- records -----------------------------------------------------------------------------------

@admin.register(ModelVersion)
class ModelVersionAdmin(DeskMixin, admin.ModelAdmin):
    list_display = ("name", "is_active", "trained", "checkpoint_sha256", "created_at")
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    actions = ["activate_selected"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # Only a version that never served may go (services.delete_model_version says why not).
        if obj is not None and (obj.is_active or GenerationRequest.objects.filter(model_version=obj).exists()):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, through the service and its audit event
        return actions

    def delete_model(self, request, obj):
        services.delete_model_version(obj.pk, request.user)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except services.WorkflowError as exc:  # it became active or served between the page and the click
            self.message_user(request, str(exc), messages.ERROR)
            return redirect(reverse("admin:stackgan_django_modelversion_changelist"))

    @admin.action(description="Activate (checks the training-data lineage against the data policy)",
                  permissions=["change"])
    def activate_selected(self, request, queryset):
        for model_version in queryset[:1]:
            try:
                services.activate_model_version(model_version.pk, request.user)
                self.message_user(request, f"{model_version.name} is now active.", messages.SUCCESS)
            except services.WorkflowError as exc:
                self.message_user(request, str(exc), messages.ERROR)


class ReadOnlyAdmin(DeskMixin, admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("sequence", "created", "actor", "action", "object_type", "object_id", "details", "hash_short")
    list_filter = ("action", "object_type")
    search_fields = ("actor", "action", "object_id", "hash")
    change_list_template = "stackgan_django/audit_log.html"
    list_per_page = 100

    def get_search_results(self, request, queryset, search_term):
        # "asset 12" or "generationrequest 7" finds the events of that object.
        parts = search_term.split()
        if len(parts) == 2 and parts[1].isdigit():
            return queryset.filter(object_type=parts[0].lower(), object_id=parts[1]), False
        queryset, duplicates = super().get_search_results(request, queryset, search_term)
        return queryset, duplicates

    def changelist_view(self, request, extra_context=None):
        from stackgan_django.audit import verify_chain

        # Verifying reads the whole log once; at pilot scale (a few hundred thousand events) that
        # is well under a second, and a compliance officer must see the state, not a cached one.
        extra_context = {**(extra_context or {}), "chain": verify_chain(app_settings.AUDIT_ANCHOR_FILE)}
        return super().changelist_view(request, extra_context)

    @admin.display(description="when", ordering="created_at")
    def created(self, event):
        return when(event.created_at)

    @admin.display(description="details")
    def details(self, event):
        from stackgan_django.review_desk import _readable_value

        return _readable_value(event.data)[:200]

    @admin.display(description="hash")
    def hash_short(self, event):
        return format_html('<code title="{}">{}…</code>', event.hash, event.hash[:10])


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ("asset", "decision", "reviewer", "note", "created_at")

    def get_queryset(self, request):
        return super().get_queryset(request).filter(Q(asset__in=visible_assets(request.user)))


@admin.register(PolicyDecision)
class PolicyDecisionAdmin(ReadOnlyAdmin):
    list_display = ("stage", "outcome", "rule_id", "request", "asset", "created_at")
    list_filter = ("stage", "outcome", "rule_id")
    # Editors read their own refusals here (the Editors group holds view_policydecision): the rule,
    # its category and the reason, never the evidence (stackgan_django.disclosure).
    requester_fields = ("stage", "outcome", "rule_id", "category", "reason", "request", "asset", "policy_version",
                        "created_at")

    def get_fields(self, request, obj=None):
        if sees_policy_evidence(request.user):
            return super().get_fields(request, obj)
        return list(self.requester_fields)

    def get_readonly_fields(self, request, obj=None):
        if sees_policy_evidence(request.user):
            return super().get_readonly_fields(request, obj)
        return list(self.requester_fields)

    @admin.display(description="category")
    def category(self, decision):
        return decision_category(decision.evidence) or "-"

    @admin.display(description="reason")
    def reason(self, decision):
        return requester_message(decision.message, decision.evidence)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset.filter(Q(request__in=visible_requests(request.user)) | Q(asset__in=visible_assets(request.user)))


admin.site.site_header = "StackGAN image generation"


# Compliance staff measure a usage-policy change on labelled captions (stackgan_django/policy_evaluation.py).
from stackgan_django.policy_evaluation import register_policy_evaluation  # noqa: E402

register_policy_evaluation(admin.site)
