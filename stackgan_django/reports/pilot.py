"""The pilot report: what the pilot produced and what it cost, for a date range. One function
computes the figures (``build_pilot_report``); the admin page, its charts (matplotlib SVG, drawn on
the server) and ``manage.py pilot_report`` all show that one result."""

from __future__ import annotations

import io
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from stackgan_django.conf import app_settings
from stackgan_django.models import Asset, GenerationRequest, PolicyDecision

State = GenerationRequest.State


@dataclass
class PilotReport:
    start: date
    end: date  # inclusive
    requests: int = 0
    requests_refused: int = 0
    requests_failed: int = 0
    requests_waiting: int = 0
    images_requested: int = 0
    images_made: int = 0
    images_refused_by_output_policy: int = 0
    approved: int = 0
    rejected: int = 0
    revoked: int = 0
    pending: int = 0
    refused_by_rule: dict[str, int] = field(default_factory=dict)
    median_hours_to_decision: float | None = None
    median_hours_to_approval: float | None = None
    compute_seconds: float = 0.0
    cost_per_gpu_hour: float | None = None
    currency: str = "USD"
    daily: list[dict[str, Any]] = field(default_factory=list)

    @property
    def share_refused(self) -> float | None:
        return self.requests_refused / self.requests if self.requests else None

    @property
    def share_approved(self) -> float | None:
        """Of the images made (passed the output policy and signed), the share approved so far."""
        return (self.approved + self.revoked) / self.images_made if self.images_made else None

    @property
    def median_seconds_to_decision(self) -> float | None:
        return None if self.median_hours_to_decision is None else self.median_hours_to_decision * 3600

    @property
    def images_rendered(self) -> int:
        return self.images_made + self.images_refused_by_output_policy

    @property
    def compute_seconds_per_image(self) -> float | None:
        return self.compute_seconds / self.images_rendered if self.images_rendered else None

    @property
    def gpu_hours(self) -> float:
        return self.compute_seconds / 3600

    @property
    def total_cost(self) -> float | None:
        return None if self.cost_per_gpu_hour is None else self.gpu_hours * self.cost_per_gpu_hour

    @property
    def cost_per_approved_image(self) -> float | None:
        approved = self.approved + self.revoked
        if self.total_cost is None or not approved:
            return None
        return self.total_cost / approved

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["start"], data["end"] = self.start.isoformat(), self.end.isoformat()
        for name in ("share_refused", "share_approved", "images_rendered", "compute_seconds_per_image", "gpu_hours",
                     "total_cost", "cost_per_approved_image"):
            data[name] = getattr(self, name)
        return data


# A day short of the calendar's ends: the report's range runs to midnight after its last day, and
# the time-zone conversion may move either bound by up to a day, both past date.max / date.min.
FIRST_DAY = date.min + timedelta(days=1)
LAST_DAY = date.max - timedelta(days=1)
MAX_RANGE_DAYS = 3660


class ReportRangeError(ValueError):
    """The date range cannot be reported on; the message says why, in the form's words."""


def check_range(start: date, end: date) -> None:
    """The one check of a range, for the page, the command and build_pilot_report alike."""
    for day in (start, end):
        if not FIRST_DAY <= day <= LAST_DAY:
            raise ReportRangeError(f"{day} is outside the dates a report can cover ({FIRST_DAY} to {LAST_DAY}).")
    if end < start:
        raise ReportRangeError(f"The end date is before the start date ({start} to {end}).")
    if (end - start).days > MAX_RANGE_DAYS:
        raise ReportRangeError("Choose a range of at most ten years.")


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    zone = timezone.get_current_timezone()
    return (timezone.make_aware(datetime.combine(start, time.min), zone),
            timezone.make_aware(datetime.combine(end + timedelta(days=1), time.min), zone))


def build_pilot_report(start: date, end: date) -> PilotReport:
    """Figures for the requests made from ``start`` to ``end`` (both days included), and for the
    images those requests made, whenever they were decided."""
    check_range(start, end)
    since, until = _bounds(start, end)
    requests = GenerationRequest.objects.filter(created_at__gte=since, created_at__lt=until)
    assets = Asset.objects.filter(request__in=requests)
    report = PilotReport(start=start, end=end, cost_per_gpu_hour=app_settings.COST_PER_GPU_HOUR,
                         currency=app_settings.COST_CURRENCY)
    by_state = dict(requests.values_list("state").annotate(n=Count("pk")))
    report.requests = sum(by_state.values())
    report.requests_refused = by_state.get(State.POLICY_DENIED, 0)
    report.requests_failed = by_state.get(State.FAILED, 0)
    report.requests_waiting = by_state.get(State.QUEUED, 0) + by_state.get(State.RUNNING, 0)
    report.images_requested = requests.exclude(state=State.POLICY_DENIED).aggregate(n=Sum("num_images"))["n"] or 0
    asset_states = dict(assets.values_list("state").annotate(n=Count("pk")))
    report.images_made = sum(asset_states.values())
    report.approved = asset_states.get(Asset.State.APPROVED, 0)
    report.rejected = asset_states.get(Asset.State.REJECTED, 0)
    report.revoked = asset_states.get(Asset.State.REVOKED, 0)
    report.pending = asset_states.get(Asset.State.PENDING_REVIEW, 0)
    output_denials = PolicyDecision.objects.filter(request__in=requests, stage="output", outcome="deny")
    # A finished request made num_images images; those without an asset were refused by the output
    # policy (one image may break several rules, so the decisions cannot be counted instead).
    done = requests.filter(state=State.DONE).annotate(kept=Count("assets"))
    report.images_refused_by_output_policy = sum(max(0, n - kept) for n, kept in done.values_list("num_images", "kept"))
    rules: Counter[str] = Counter()
    rules.update(PolicyDecision.objects.filter(request__in=requests, request__state=State.POLICY_DENIED, stage="usage",
                                               outcome="deny").values_list("rule_id", flat=True))
    rules.update(output_denials.values_list("rule_id", flat=True))
    report.refused_by_rule = dict(rules.most_common())
    decided = list(assets.filter(decided_at__isnull=False).values_list("state", "decided_at", "request__created_at"))
    hours = [(decided_at - asked).total_seconds() / 3600 for _, decided_at, asked in decided]
    approvals = [(decided_at - asked).total_seconds() / 3600 for state, decided_at, asked in decided
                 if state in (Asset.State.APPROVED, Asset.State.REVOKED)]
    report.median_hours_to_decision = statistics.median(hours) if hours else None
    report.median_hours_to_approval = statistics.median(approvals) if approvals else None
    report.compute_seconds = float(requests.aggregate(s=Sum("compute_seconds"))["s"] or 0.0)
    report.daily = _daily(requests, assets, start, end)
    return report


def _daily(requests, assets, start: date, end: date) -> list[dict[str, Any]]:
    days = {start + timedelta(days=i): {"requests": 0, "refused": 0, "approved": 0, "rejected": 0, "pending": 0, "revoked": 0}
            for i in range((end - start).days + 1)}
    for created, state in requests.values_list("created_at", "state"):
        day = timezone.localtime(created).date()
        if day in days:
            days[day]["requests"] += 1
            days[day]["refused"] += state == State.POLICY_DENIED
    names = {Asset.State.APPROVED: "approved", Asset.State.REJECTED: "rejected", Asset.State.PENDING_REVIEW: "pending",
             Asset.State.REVOKED: "revoked"}
    for created, state in assets.values_list("request__created_at", "state"):
        day = timezone.localtime(created).date()
        if day in days:
            days[day][names[state]] += 1
    return [{"day": day.isoformat(), **counts} for day, counts in days.items()]


# -- charts -----------------------------------------------------------------------------------------

COLOURS = {"approved": "#2e7d32", "pending": "#f9a825", "rejected": "#c62828", "revoked": "#6a1b9a", "refused": "#546e7a"}


def _svg(figure) -> str:
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    buffer = io.StringIO()
    FigureCanvasSVG(figure).print_svg(buffer)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prologue and doctype: the SVG goes inline in HTML


# Bars of the first chart: one per day for up to a quarter, then one per week (up to two years),
# then one per month. A ten-year range drew 14,600 bars, 27 s of CPU and a 2.9 MB page per view.
MAX_DAILY_BARS = 92
MAX_WEEKLY_BARS_DAYS = 731
CHART_KEYS = ("requests", "refused", "approved", "rejected", "pending", "revoked")


def chart_periods(report: PilotReport) -> tuple[str, list[dict[str, Any]]]:
    """The daily rows summed into the chart's periods: ("day" | "week" | "month", rows), each row
    labelled by its period's first day (a month by its year and month)."""
    days = len(report.daily)
    if days <= MAX_DAILY_BARS:
        return "day", report.daily
    unit = "week" if days <= MAX_WEEKLY_BARS_DAYS else "month"
    periods: dict[str, dict[str, Any]] = {}
    for row in report.daily:
        day = date.fromisoformat(row["day"])
        label = (day - timedelta(days=day.weekday())).isoformat() if unit == "week" else day.isoformat()[:7]
        period = periods.setdefault(label, {"day": label, **dict.fromkeys(CHART_KEYS, 0)})
        for key in CHART_KEYS:
            period[key] += row[key]
    return unit, list(periods.values())


def render_charts(report: PilotReport) -> dict[str, str]:
    """Two SVG charts drawn on the server (no JavaScript, no CDN): images per day (per week or
    month over long ranges) by review outcome, and refusals by rule."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    charts: dict[str, str] = {}
    # Text stays text (searchable, accessible); a fixed hash salt keeps the SVG ids stable.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "stackgan-pilot", "font.size": 9}):
        figure = Figure(figsize=(8, 3.2), layout="constrained")
        axes = figure.add_subplot()
        # Month and day suffice within one year; across a year boundary the same "01-05" would
        # stand for two days (and matplotlib would merge their bars), so the year is shown then.
        unit, rows = chart_periods(report)
        days = [row["day"] if report.start.year != report.end.year or unit == "month" else row["day"][5:]
                for row in rows]
        bottom = [0] * len(days)
        for key in ("approved", "pending", "rejected", "revoked"):
            values = [row[key] for row in rows]
            axes.bar(days, values, bottom=bottom, color=COLOURS[key], label=key)
            bottom = [b + v for b, v in zip(bottom, values)]
        refused = [(day, row["refused"]) for day, row in zip(days, rows) if row["refused"]]
        if refused:
            axes.plot([d for d, _ in refused], [n for _, n in refused], color=COLOURS["refused"], marker="o",
                      linestyle="none", label="requests refused")
        axes.set_ylabel("images")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # images come in whole numbers
        axes.set_title(f"Images per {unit} by review outcome")
        axes.legend(loc="upper left", frameon=False, ncols=5)
        step = max(1, len(days) // 12)
        axes.set_xticks(range(0, len(days), step), days[::step])
        axes.spines[["top", "right"]].set_visible(False)
        charts["daily"] = _svg(figure)

        rules = list(report.refused_by_rule.items())[:10]
        figure = Figure(figsize=(8, 0.5 + 0.35 * max(1, len(rules))), layout="constrained")
        axes = figure.add_subplot()
        if rules:
            axes.barh([r for r, _ in rules][::-1], [n for _, n in rules][::-1], color=COLOURS["refused"])
            axes.set_xlabel("refusals")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            axes.text(0.5, 0.5, "nothing was refused", ha="center", va="center", transform=axes.transAxes)
            axes.set_axis_off()
        axes.set_title("Refusals by policy rule")
        axes.spines[["top", "right"]].set_visible(False)
        charts["rules"] = _svg(figure)
    return charts


# -- the admin page -------------------------------------------------------------------------------

class PilotRangeForm(forms.Form):
    # ISO dates: the only format an <input type="date"> shows.
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    end = forms.DateField(label="To (included)", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("start") and data.get("end"):
            try:
                check_range(data["start"], data["end"])
            except ReportRangeError as exc:
                raise forms.ValidationError(str(exc)) from None
        return data


def default_range() -> tuple[date, date]:
    today = timezone.localdate()
    return today - timedelta(days=29), today


def pilot_report_view(model_admin: Any, request: HttpRequest) -> HttpResponse:
    from django.utils.safestring import mark_safe

    start, end = default_range()
    form = PilotRangeForm(request.GET if "start" in request.GET or "end" in request.GET else {"start": start, "end": end})
    report = charts = None
    if form.is_valid():
        report = build_pilot_report(form.cleaned_data["start"], form.cleaned_data["end"])
        if request.GET.get("format") == "json":
            return JsonResponse(report.to_dict())
        # The SVG is drawn here from numbers and rule ids; matplotlib escapes the text it writes.
        charts = {name: mark_safe(svg) for name, svg in render_charts(report).items()}  # noqa: S308
    context = {**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta, "title": "Pilot report",
               "form": form, "report": report, "charts": charts}
    return TemplateResponse(request, "stackgan_django/pilot_report.html", context, status=200 if form.is_valid() else 400)
