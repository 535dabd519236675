"""Admin for API keys: the secret is shown once, at creation; afterwards only the prefix is visible.
Scopes are chosen from a list; revocation is final. Imported from AppConfig.ready()."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from rest_framework_api_key.admin import APIKeyModelAdmin

from stackgan_django.admin_changelist import GuardedChangeListMixin
from stackgan_django.audit import record_event
from stackgan_django.models import ApiKey, WebhookAttempt, WebhookDelivery
from stackgan_django.services.api_keys import InvalidApiKey, check_expiry


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple,
                                       help_text="what the key may do; its user's permissions apply as well")

    # Set by ApiKeyAdmin.get_form: the person creating the key.
    request_user = None

    class Meta:
        model = ApiKey
        fields = ("name", "user", "scopes", "expiry_date", "revoked")

    def clean_expiry_date(self):
        expiry = self.cleaned_data.get("expiry_date")
        if "expiry_date" in self.changed_data or self.instance.pk is None:
            try:
                check_expiry(expiry)
            except InvalidApiKey as exc:
                raise forms.ValidationError(str(exc)) from None
        return expiry

    def clean_user(self):
        user = self.cleaned_data.get("user")
        creator = self.request_user
        if user is not None and creator is not None and not creator.is_superuser and user.pk != creator.pk:
            # Whoever holds a key acts as its user: a key for someone else would let its creator act
            # with that person's permissions (a superuser's, say).
            raise forms.ValidationError("Only a superuser may create a key for another user; create one for "
                                        "yourself.")
        return user


@admin.register(ApiKey)
class ApiKeyAdmin(GuardedChangeListMixin, APIKeyModelAdmin):
    form = ApiKeyForm
    list_display = ("prefix", "name", "user", "scope_list", "created", "expiry_date", "_has_expired", "revoked")
    list_filter = ("revoked", "created")
    search_fields = ("name", "prefix", "user__username")
    autocomplete_fields = ()
    raw_id_fields = ("user",)

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes or [])

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)  # a new class for each request
        form.request_user = request.user
        return form

    def get_readonly_fields(self, request, obj: ApiKey | None = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None:
            # Whoever holds the secret acts as the key's user with its scopes: changing either would
            # hand the holder another person's rights. Revoke the key and create a new one instead.
            fields += ("user", "scopes")
        return fields

    def save_model(self, request, obj: ApiKey, form=None, change: bool = False) -> None:
        was_revoked = bool(change and ApiKey.objects.filter(pk=obj.pk, revoked=True).exists())
        super().save_model(request, obj, form, change)  # shows the secret once on creation
        if not change:
            record_event("api_key.created", None, request.user, prefix=obj.prefix, user=obj.user.get_username(),
                         scopes=obj.scopes)
            return
        if obj.revoked and not was_revoked:
            record_event("api_key.revoked", None, request.user, prefix=obj.prefix, user=obj.user.get_username())
            messages.info(request, f"The key {obj.prefix} is revoked; requests with it are refused from now on.")
        changed = [name for name in (form.changed_data if form is not None else []) if name != "revoked"]
        if changed:  # a longer expiry keeps a key alive: every change to a key is on the record
            record_event("api_key.changed", None, request.user, prefix=obj.prefix, user=obj.user.get_username(),
                         fields=changed, expiry_date=obj.expiry_date.isoformat() if obj.expiry_date else None,
                         name=obj.name)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: the audit log refers to keys by prefix


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = ("number", "started_at", "status_code", "error", "duration_ms")

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(GuardedChangeListMixin, admin.ModelAdmin):
    list_display = ("event", "url", "state", "attempts", "created_at", "delivered_at")
    list_filter = ("state", "event")
    readonly_fields = ("event", "asset", "url", "payload", "state", "attempts", "created_at", "delivered_at")
    inlines = [WebhookAttemptInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
