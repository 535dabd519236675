"""Admin page for compliance staff: measure the usage policy on a labelled CSV before a change goes
live, the policy in force and a proposed one side by side (the page behind
``python -m policies evaluate-usage``).

The proposed policy is the folder in force with the files the officer uploads (usage.toml,
semantic.toml) put in their place, loaded into a temporary folder; nothing in force is touched.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django import forms
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from policies import PolicyError, load_policies
from policies.evaluation import LabelledSetError, evaluate, format_reports, read_labelled
from stackgan_django.access import REVIEW_ASSET
from stackgan_django.governance import current_policies, policy_folder
from stackgan_django.throttling import page_throttle_wait

logger = logging.getLogger(__name__)

MAX_CSV_BYTES = 2_000_000
MAX_POLICY_BYTES = 1_000_000
# Each caption costs a few milliseconds per policy; beyond this the command line is the tool.
MAX_ROWS_IN_ADMIN = 1500
# The API's longest caption: a longer one is refused by length at no cost, but the evaluation still
# embeds every caption to find paraphrases of examples, and 180 words took 1.4 s a row.
MAX_CAPTION_CHARS_IN_ADMIN = 1000
# Counted per person under STACKGAN["API_THROTTLE_RATES"]["policy_evaluation"]: one evaluation can
# take minutes of a web process.
THROTTLE_SCOPE = "policy_evaluation"
PROPOSABLE_FILES = ("usage.toml", "semantic.toml")
# Compliance staff only. Not view_policydecision: editors hold it (to read their own refusals), and
# this page would give them a bulk oracle of which harmful captions the policy lets through, with
# the evidence, and a place to try policy files of their own.
PERMISSION = REVIEW_ASSET


def may_evaluate_policies(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.has_perm(PERMISSION))


class PolicyEvaluationForm(forms.Form):
    labelled = forms.FileField(label="Labelled captions (CSV)",
                               help_text="Columns: caption, expected (allow / review / deny), optionally category and split.")
    split = forms.CharField(required=False, max_length=40,
                            help_text="Only rows of this split (the shipped set has dev and dev2, both learnt from); empty: all rows.")
    proposed_usage = forms.FileField(required=False, label="Proposed usage.toml")
    proposed_semantic = forms.FileField(required=False, label="Proposed semantic.toml")

    def clean_labelled(self):
        upload = self.cleaned_data["labelled"]
        if upload.size > MAX_CSV_BYTES:
            raise forms.ValidationError(f"The CSV is larger than {MAX_CSV_BYTES // 1_000_000} MB; use python -m policies evaluate-usage.")
        try:
            return upload.read().decode("utf-8")
        except UnicodeDecodeError:
            raise forms.ValidationError("The CSV must be UTF-8 text.") from None

    def _clean_policy_file(self, field: str) -> str | None:
        upload = self.cleaned_data.get(field)
        if not upload:
            return None
        if upload.size > MAX_POLICY_BYTES:
            raise forms.ValidationError("The policy file is larger than 1 MB.")
        try:
            return upload.read().decode("utf-8")
        except UnicodeDecodeError:
            raise forms.ValidationError("The policy file must be UTF-8 text.") from None

    def clean_proposed_usage(self):
        return self._clean_policy_file("proposed_usage")

    def clean_proposed_semantic(self):
        return self._clean_policy_file("proposed_semantic")


def _proposed_policies(files: dict[str, str]):
    """The folder in force with the uploaded files in place, loaded from a temporary copy."""
    with tempfile.TemporaryDirectory(prefix="stackgan-proposed-") as temporary:
        folder = Path(temporary) / "policies"
        shutil.copytree(policy_folder(), folder)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        return load_policies(folder)  # everything is read here; the folder may go


def policy_evaluation_view(request: HttpRequest, site: AdminSite) -> HttpResponse:
    if not may_evaluate_policies(request.user):
        raise PermissionDenied
    form = PolicyEvaluationForm(request.POST or None, request.FILES or None)
    report_text, error = None, None
    if request.method == "POST":
        wait = page_throttle_wait(request, THROTTLE_SCOPE)
        if wait:
            context = {**site.each_context(request), "title": "Test a usage policy on labelled captions",
                       "form": form, "report": None,
                       "error": f"Too many evaluations: try again in {wait} seconds, or use python -m policies "
                                "evaluate-usage on your own machine."}
            response = TemplateResponse(request, "admin/stackgan_django/policy_evaluation.html", context, status=429)
            response["Retry-After"] = str(wait)
            return response
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            rows = read_labelled(data["labelled"], data["split"] or None)
            if len(rows) > MAX_ROWS_IN_ADMIN:
                raise LabelledSetError(f"{len(rows)} captions; the admin page takes up to {MAX_ROWS_IN_ADMIN}. "
                                       "Use python -m policies evaluate-usage for more, or choose a split.")
            long = next((number for number, row in enumerate(rows, 1) if len(row.caption) > MAX_CAPTION_CHARS_IN_ADMIN), None)
            if long is not None:
                raise LabelledSetError(f"caption {long} is {len(rows[long - 1].caption)} characters long; the admin page "
                                       f"takes captions of up to {MAX_CAPTION_CHARS_IN_ADMIN} (the API's limit). Use "
                                       "python -m policies evaluate-usage for longer ones.")
            reports = [evaluate(current_policies().usage, rows, "in force")]
            proposed = {name: text for name, text in (("usage.toml", data["proposed_usage"]),
                                                       ("semantic.toml", data["proposed_semantic"])) if text}
            if proposed:
                reports.append(evaluate(_proposed_policies(proposed).usage, rows, "proposed (" + ", ".join(proposed) + ")"))
            report_text = format_reports(reports)
        except LabelledSetError as exc:
            error = str(exc)
        except PolicyError as exc:
            error = f"The policy files cannot be used: {exc}"
    context = {**site.each_context(request), "title": "Test a usage policy on labelled captions", "form": form,
               "report": report_text, "error": error}
    return TemplateResponse(request, "admin/stackgan_django/policy_evaluation.html", context)


def register_policy_evaluation(site: AdminSite) -> None:
    """Add the page to an admin site at <admin>/stackgan_django/policy-evaluation/."""
    original_get_urls = site.get_urls

    def view(request: HttpRequest) -> HttpResponse:
        return policy_evaluation_view(request, site)

    def get_urls():
        return [path("stackgan_django/policy-evaluation/", site.admin_view(view), name="stackgan_django_policy_evaluation"),
                *original_get_urls()]

    site.get_urls = get_urls
