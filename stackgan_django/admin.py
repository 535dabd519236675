"""Minimal admin: editors submit captions and see requests; reviewers approve or reject assets.
Every change goes through stackgan_django.services."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html

from stackgan_django import services
from stackgan_django.governance import current_policies
from stackgan_django.models import Asset, AuditEvent, GenerationRequest, ModelVersion, PolicyDecision, Review


class PolicyDecisionInline(admin.TabularInline):
    model = PolicyDecision
    fk_name = "request"
    extra = 0
    can_delete = False
    fields = readonly_fields = ("stage", "outcome", "rule_id", "message", "evidence", "policy_version")

    def has_add_permission(self, request, obj=None):
        return False


class AssetInline(admin.TabularInline):
    model = Asset
    extra = 0
    can_delete = False
    fields = readonly_fields = ("preview", "index", "seed", "state", "flagged")

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="image")
    def preview(self, asset):
        return format_html('<img src="{}" width="96" height="96">', asset.file.url) if asset.file else "-"


class GenerationRequestForm(forms.ModelForm):
    class Meta:
        model = GenerationRequest
        fields = ("caption", "num_images", "seed", "purpose")
        widgets = {"caption": forms.Textarea(attrs={"rows": 3, "cols": 80})}

    def clean(self):
        data = super().clean()
        try:
            caption, num_images, seed = services.validate_submission(
                data.get("caption"), data.get("num_images"), data.get("seed"))
        except services.InvalidSubmission as exc:
            for field, message in exc.errors.items():
                self.add_error(field if field in self.fields else None, message)
            return data
        try:
            services.active_model_version()
        except services.NoActiveModel as exc:
            self.add_error(None, str(exc))
        data.update(caption=caption, num_images=num_images, seed=seed)
        return data


@admin.register(GenerationRequest)
class GenerationRequestAdmin(admin.ModelAdmin):
    form = GenerationRequestForm
    list_display = ("id", "caption", "state", "num_images", "flagged", "requested_by", "created_at", "compute_seconds")
    list_filter = ("state", "flagged", "purpose")
    search_fields = ("caption",)
    inlines = [PolicyDecisionInline, AssetInline]
    actions = ["retry_selected"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return [f.name for f in GenerationRequest._meta.fields]

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra_context = extra_context or {}
        try:
            extra_context["subtitle"] = f"usage policy version {current_policies().version[:12]}"
        except Exception:  # a broken policy is reported by checks and fails closed at submission
            extra_context["subtitle"] = "usage policy unavailable: captions will be refused"
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        if change:
            return  # requests are immutable once submitted
        try:
            created = services.submit_request(
                caption=form.cleaned_data["caption"], num_images=form.cleaned_data["num_images"],
                seed=form.cleaned_data.get("seed"), purpose=form.cleaned_data["purpose"], user=request.user)
        except services.WorkflowError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            raise
        obj.pk = created.pk
        obj.refresh_from_db()
        if created.state == GenerationRequest.State.POLICY_DENIED:
            reasons = " ".join(d.message for d in created.decisions.exclude(outcome="allow"))
            self.message_user(request, f"Refused by the usage policy: {reasons}", messages.ERROR)
        elif created.flagged:
            self.message_user(request, "Queued; a policy rule flagged it, so its images get an extra review.",
                              messages.WARNING)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Retry the selected failed requests", permissions=["change"])
    def retry_selected(self, request, queryset):
        for generation_request in queryset:
            try:
                services.retry_request(generation_request.pk, request.user)
            except services.WorkflowError as exc:
                self.message_user(request, str(exc), messages.WARNING)


class VerifyUploadForm(forms.Form):
    file = forms.FileField(help_text="PNG, JPEG or WebP, up to 50 MB")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > 50 * 1024 * 1024:
            raise forms.ValidationError("The file is larger than 50 MB.")
        return upload


class ReviewNoteForm(admin.helpers.ActionForm):
    note = forms.CharField(required=False, label="Review note", widget=forms.TextInput(attrs={"size": 40}))


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


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ("id", "thumbnail", "caption", "state", FlaggedFilter.parameter_name, "created_at")
    list_filter = ("state", FlaggedFilter)
    ordering = ("created_at",)
    action_form = ReviewNoteForm
    actions = ["approve_selected", "reject_selected", "revoke_selected"]
    exclude = ["provenance"]
    readonly_fields = [f.name for f in Asset._meta.fields if f.name != "provenance"] + ["image", "provenance_report"]
    change_list_template = "admin/stackgan_django/asset_change_list.html"

    def get_urls(self):
        return [path("verify/", self.admin_site.admin_view(self.verify_view), name="stackgan_django_asset_verify"),
                *super().get_urls()]

    def verify_view(self, request):
        """Compliance staff upload any file and see whether it is ours, approved, and unaltered."""
        if not request.user.has_perm("stackgan_django.view_asset"):
            raise PermissionDenied
        form = VerifyUploadForm(request.POST or None, request.FILES or None)
        report = None
        if request.method == "POST" and form.is_valid():
            report = services.verify_file(form.cleaned_data["file"].read())
        context = {**self.admin_site.each_context(request), "title": "Check a file's provenance", "form": form,
                   "report": report, "opts": self.model._meta}
        return TemplateResponse(request, "admin/stackgan_django/verify.html", context)

    @admin.display(description="provenance")
    def provenance_report(self, asset):
        if not asset.provenance:
            return "-"
        return render_to_string("admin/stackgan_django/provenance_report.html", {"report": asset.provenance})

    @admin.display(description="flagged", boolean=True)
    def flagged_by_policy(self, asset):
        return asset.flagged

    @admin.display(description="caption")
    def caption(self, asset):
        return asset.request.caption

    @admin.display(description="image")
    def thumbnail(self, asset):
        return format_html('<img src="{}" width="64" height="64">', asset.file.url) if asset.file else "-"

    @admin.display(description="image")
    def image(self, asset):
        return format_html('<img src="{}" style="max-width:512px">', asset.file.url) if asset.file else "-"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_review_permission(self, request):
        return request.user.has_perm("stackgan_django.review_asset")

    def _apply(self, request, queryset, service, verb):
        note = request.POST.get("note", "")
        done = 0
        for asset in queryset:
            try:
                service(asset.pk, request.user, note)
                done += 1
            except services.WorkflowError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if done:
            self.message_user(request, f"{done} asset(s) {verb}.", messages.SUCCESS)

    @admin.action(description="Approve selected assets", permissions=["review"])
    def approve_selected(self, request, queryset):
        self._apply(request, queryset, services.approve_asset, "approved")

    @admin.action(description="Reject selected assets", permissions=["review"])
    def reject_selected(self, request, queryset):
        self._apply(request, queryset, services.reject_asset, "rejected")

    @admin.action(description="Revoke selected approved assets", permissions=["review"])
    def revoke_selected(self, request, queryset):
        self._apply(request, queryset, services.revoke_asset, "revoked")


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "is_active", "trained", "checkpoint_sha256", "created_at")
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    actions = ["activate_selected"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Activate (checks the training-data lineage against the data policy)",
                  permissions=["change"])
    def activate_selected(self, request, queryset):
        for model_version in queryset[:1]:
            try:
                services.activate_model_version(model_version.pk, request.user)
                self.message_user(request, f"{model_version.name} is now active.", messages.SUCCESS)
            except services.WorkflowError as exc:
                self.message_user(request, str(exc), messages.ERROR)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("sequence", "created_at", "actor", "action", "object_type", "object_id")
    list_filter = ("action", "object_type")


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ("asset", "decision", "reviewer", "note", "created_at")


@admin.register(PolicyDecision)
class PolicyDecisionAdmin(ReadOnlyAdmin):
    list_display = ("stage", "outcome", "rule_id", "request", "asset", "created_at")
    list_filter = ("stage", "outcome", "rule_id")


admin.site.site_header = "StackGAN image generation"


# Compliance staff measure a usage-policy change on labelled captions (stackgan_django/policy_evaluation.py).
from stackgan_django.policy_evaluation import register_policy_evaluation  # noqa: E402

register_policy_evaluation(admin.site)
