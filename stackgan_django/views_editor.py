"""The editor's pages in the admin: a new request, the request page that updates itself while the
worker runs (htmx polls a small HTML fragment), "generate again", and the authorised image view
that every page uses instead of a public media URL."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse

from stackgan_django import services
from stackgan_django.access import visible_assets, visible_requests
from stackgan_django.disclosure import requester_message, sees_policy_evidence
from stackgan_django.files import file_response, held_for_review, may_download
from stackgan_django.governance import current_policies
from stackgan_django.models import Asset, GenerationRequest
from stackgan_django.throttling import page_throttle_wait

State = GenerationRequest.State
LIVE_STATES = (State.QUEUED, State.RUNNING)


ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")
# Longer than any bound here (the seed has at most 19 digits); converting is not worth it.
MAX_INTEGER_DIGITS = 30


class AsciiIntegerField(forms.IntegerField):
    """Whole numbers in the digits 0-9 only. Django's IntegerField takes whatever int() takes:
    "٣" and "１２" too, which nobody types on purpose and which the audit log would record as a
    number the editor did not see; and "3.0"."""

    default_error_messages = {"invalid": "Enter a whole number using the digits 0-9."}

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        text = str(value).strip()
        if not ASCII_INTEGER.fullmatch(text):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        if len(text.lstrip("+-").lstrip("0")) > MAX_INTEGER_DIGITS:
            bounds = f" from {self.min_value} to {self.max_value}" if None not in (self.min_value, self.max_value) else ""
            raise forms.ValidationError(f"The number is out of range: enter a whole number{bounds}.", code="out_of_range")
        return int(text)


class NewRequestForm(forms.Form):
    caption = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 70, "autofocus": True}),
                              help_text="Describe the image in plain words, e.g. “a red apple with a green leaf”.")
    num_images = AsciiIntegerField(label="Number of images", initial=4, min_value=1)
    purpose = forms.CharField(initial="editorial", max_length=50)
    seed = AsciiIntegerField(required=False, min_value=0,
                             help_text="Leave empty for new images each time; the same seed redraws the same images.")
    submission_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Upper bounds from the settings for the browser and the out-of-range message; the
        # services check them (with their own words) for every caller.
        for name, limit in (("num_images", services.app_settings.MAX_IMAGES_PER_REQUEST),
                            ("seed", services.app_settings.MAX_SEED)):
            self.fields[name].max_value = limit
            self.fields[name].widget.attrs["max"] = limit

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            caption, num_images, seed = services.validate_submission(data.get("caption"), data.get("num_images"), data.get("seed"))
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


def _admin_context(model_admin: Any, request: HttpRequest, **extra: Any) -> dict[str, Any]:
    return {**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta, **extra}


def request_url(request_id: int) -> str:
    return reverse("admin:stackgan_django_generationrequest_change", args=[request_id])


def new_request_view(model_admin: Any, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
    """The caption box. Each rendered form carries a token, so a double click or a re-sent POST
    leads to the request it already made, never to a second one.

    Each POST counts under the API's ``requests`` rate for the person (throttling.page_throttle_wait),
    refused captions included: each runs the usage policy and is answered with its reasons, and
    unlimited, the form was a way round the API's limit to probe the policy by script."""
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    wait = page_throttle_wait(request, "requests") if request.method == "POST" else 0
    if wait:
        # Nothing is checked or made; the form comes back as it was sent, to send again later (the
        # same token: nothing was made under it).
        kept = {name: request.POST.get(name, "")[:2000] for name in ("caption", "num_images", "purpose", "seed")}
        form = NewRequestForm(initial={**kept, "submission_key": request.POST.get("submission_key", "")[:64]
                                       or uuid.uuid4().hex})
    elif request.method == "POST":
        form = NewRequestForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                created, is_new = services.submit_once(
                    data["submission_key"], user=request.user, caption=data["caption"], num_images=data["num_images"],
                    seed=data["seed"], purpose=data["purpose"])
            except services.WorkflowError as exc:
                form.add_error(None, str(exc))
            else:
                _message_for_submission(request, created, is_new)
                return redirect(request_url(created.pk))
    else:
        initial = {"submission_key": uuid.uuid4().hex}
        if "caption" in request.GET:  # "change the caption" from a refused request
            initial["caption"] = request.GET["caption"][:2000]
        form = NewRequestForm(initial=initial)
    try:
        policy_note = f"Captions are checked against usage policy version {current_policies().version[:12]}."
    except Exception:  # a broken policy is reported by checks and fails closed at submission
        policy_note = "The usage policy cannot be read just now: captions will be refused."
    context = _admin_context(model_admin, request, title="Ask for images", form=form, policy_note=policy_note,
                             max_images=services.app_settings.MAX_IMAGES_PER_REQUEST,
                             error=too_many_requests_message(wait) if wait else None)
    return _throttled(TemplateResponse(request, "stackgan_django/new_request.html", context), wait)


def too_many_requests_message(wait: int) -> str:
    return (f"You have asked for images too often in a short time, so nothing was checked or generated. "
            f"Try again in {wait} second{'s' if wait != 1 else ''}.")


def _throttled(response: HttpResponse, wait: int) -> HttpResponse:
    """``response`` as the answer past the rate limit: 429 with Retry-After (unchanged when ``wait`` is 0)."""
    if wait:
        response.status_code = 429
        response["Retry-After"] = str(wait)
    return response


def _message_for_submission(request: HttpRequest, created: GenerationRequest, is_new: bool) -> None:
    if not is_new:
        messages.info(request, "This form was already sent; here is the request it made.")
    elif created.state == State.POLICY_DENIED:
        full_evidence = sees_policy_evidence(request.user)
        reasons = " ".join(d.message if full_evidence else requester_message(d.message, d.evidence)
                           for d in created.decisions.exclude(outcome="allow"))
        messages.error(request, f"Refused by the usage policy, nothing was generated: {reasons}")
    elif created.flagged:
        messages.warning(request, "Queued. A policy rule flagged the caption, so its images get an extra review.")
    else:
        messages.success(request, f"Queued: {created.num_images} image(s). This page shows them as soon as they are ready.")


def _visible_request(request: HttpRequest, object_id: Any) -> GenerationRequest:
    try:
        pk = int(object_id)
    except (TypeError, ValueError):
        raise Http404("No such request.") from None
    found = visible_requests(request.user).select_related("requested_by", "model_version").filter(pk=pk).first()
    if found is None:
        # Someone else's request answers exactly like one that does not exist: nothing leaks.
        raise Http404("No such request.")
    return found


def status_context(request: HttpRequest, generation_request: GenerationRequest) -> dict[str, Any]:
    from stackgan_django.review_desk import decision_rows

    assets = list(visible_assets(request.user, generation_request.assets.all()).order_by("index"))
    full_evidence = sees_policy_evidence(request.user)
    refused_outputs = decision_rows(generation_request.decisions.filter(stage="output", outcome="deny"),
                                    full_evidence=full_evidence)
    shown_images = {asset.pk for asset in assets if asset_image_allowed(request.user, asset)}
    return {
        "gr": generation_request,
        "live": generation_request.state in LIVE_STATES,
        "position": services.queue_position(generation_request),
        "steps": services.progress_steps(generation_request),
        "refusals": decision_rows(generation_request.decisions.filter(stage="usage").exclude(outcome="allow"),
                                  full_evidence=full_evidence),
        "refused_outputs": refused_outputs,
        "assets": assets,
        # A rejected or revoked image is no longer served to its editor, and a flagged one not yet:
        # say so instead of a broken image.
        "shown_images": shown_images,
        "held_images": {asset.pk for asset in assets if asset.pk not in shown_images and held_for_review(asset)},
        "status_url": reverse("admin:stackgan_django_generationrequest_status", args=[generation_request.pk]),
        "new_request_url": reverse("admin:stackgan_django_generationrequest_add"),
    }


def request_page_view(model_admin: Any, request: HttpRequest, object_id: str, form_url: str = "",
                      extra_context: Any = None) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    generation_request = _visible_request(request, object_id)
    context = _admin_context(model_admin, request, title=f"Request #{generation_request.pk}",
                             original=generation_request, can_add=model_admin.has_add_permission(request),
                             again=generation_request.resubmission_of,
                             # One token per rendered page: "generate again" twice from it makes one request.
                             again_key=uuid.uuid4().hex,
                             **status_context(request, generation_request))
    return TemplateResponse(request, "stackgan_django/request_page.html", context)


def request_status_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    """The fragment htmx swaps in every second while the request is queued or running; the
    fragment of a finished request carries no trigger, so the polling stops by itself."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    generation_request = _visible_request(request, object_id)
    response = TemplateResponse(request, "stackgan_django/_request_status.html", status_context(request, generation_request))
    response["Cache-Control"] = "no-store"
    return response


def generate_again_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    original = _visible_request(request, object_id)
    wait = page_throttle_wait(request, "requests")
    if wait:
        # The request page again, saying why nothing happened (a redirect would lose the status).
        messages.error(request, too_many_requests_message(wait))
        return _throttled(request_page_view(model_admin, request, str(original.pk)), wait)
    try:
        created, is_new = services.resubmit_once(request.POST.get("submission_key", ""), original.pk, request.user)
    except services.WorkflowError as exc:
        messages.error(request, str(exc))
        return redirect(request_url(original.pk))
    _message_for_submission(request, created, is_new)
    return redirect(request_url(created.pk))


def asset_image_view(request: HttpRequest, asset_id: int) -> HttpResponse:
    """Streams an asset's image to a signed-in user who may see it (files.may_download decides);
    404 for anyone else, so the view never says which assets exist or were withdrawn.
    ``?file=approved`` gives the file with the review manifest, only while the asset is approved
    (for anyone but compliance staff)."""
    asset = visible_assets(request.user).filter(pk=asset_id).first()
    approved_file = request.GET.get("file") == "approved"
    if asset is None or not may_download(request.user, asset, approved_file, requester_door=True):
        raise Http404("No such image.")
    if not (asset.approved_file if approved_file else asset.file):
        raise Http404("This asset has no such file.")
    # Inline, revalidated on every use (ETag, so it costs a 304): a revocation takes effect on the
    # next page load instead of after a browser-cache lifetime.
    return file_response(request, asset, approved_file, inline=True)


def asset_image_allowed(user: Any, asset: Asset, approved: bool = False) -> bool:
    """Whether ``asset_image_view`` would show this image to ``user``, for pages that must not
    show a broken image in place of a withdrawn one (the asset came from visible_assets)."""
    return may_download(user, asset, approved, requester_door=True)


def asset_image_url(asset: Asset, approved: bool = False) -> str:
    url = reverse("admin:stackgan_django_asset_image", args=[asset.pk])
    return f"{url}?file=approved" if approved else url
