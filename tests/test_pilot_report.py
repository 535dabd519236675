"""The pilot report: the figures for a known set of requests and decisions, the same figures on the
admin page (with its SVG charts), in ``manage.py pilot_report`` and its JSON, and bad dates."""

from __future__ import annotations

import json
from datetime import date, timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from PIL import Image

from policies import Decision, Outcome, Verdict
from stackgan_django import services
from stackgan_django.models import Asset, GenerationRequest
from stackgan_django.reports.pilot import build_pilot_report, render_charts

COST_PER_GPU_HOUR = 3.6


def finished(user, caption, count, compute_seconds, refuse_index=None):
    """A request the worker finished: ``refuse_index`` is left out by the output policy."""
    request = services.submit_request(caption=caption, num_images=count, user=user)
    services.start_request(request.pk)
    outputs = []
    for index in range(count):
        denied = [Decision(Outcome.DENY, "output.degenerate.blank", "The image is blank.")] if index == refuse_index else []
        output = services.GeneratedOutput(index, request.seed + index, Image.effect_noise((64, 64), 50).convert("RGB"),
                                          Verdict("output", "v", denied))
        outputs.append(output if denied else services.stamp_output(request, output))
    return request, services.finish_request(request.pk, outputs, compute_seconds)


@pytest.fixture
def pilot(db, active_model, no_broker, users, settings):
    """Four requests in range (two refused by the usage policy), one far outside it."""
    settings.STACKGAN = {**settings.STACKGAN, "COST_PER_GPU_HOUR": COST_PER_GPU_HOUR, "COST_CURRENCY": "EUR"}
    editor, reviewer = users
    apple, (approved, rejected) = finished(editor, "a red apple", 2, 3.6)
    services.approve_asset(approved.pk, reviewer, note="good")
    services.reject_asset(rejected.pk, reviewer, note="blurry")
    asked = apple.created_at
    # Decisions two and four hours after the request: a median of three hours.
    Asset.objects.filter(pk=approved.pk).update(decided_at=asked + timedelta(hours=2))
    Asset.objects.filter(pk=rejected.pk).update(decided_at=asked + timedelta(hours=4))
    finished(editor, "a blue bird", 2, 1.8, refuse_index=1)
    nude = services.submit_request(caption="a n.u.d.e figure", num_images=2, user=editor)
    character = services.submit_request(caption="Pikachu on a hill", num_images=2, user=editor)
    old, _ = finished(editor, "an old request", 1, 100.0)
    GenerationRequest.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=90))
    return {"nude": nude, "character": character}


def test_figures_for_a_known_pilot(pilot):
    today = timezone.localdate()
    report = build_pilot_report(today - timedelta(days=7), today)
    character_rule = pilot["character"].decisions.get(outcome="deny").rule_id
    assert (report.requests, report.requests_refused, report.share_refused) == (4, 2, 0.5)
    assert report.refused_by_rule == {"usage.blocked.sexual_content": 1, character_rule: 1, "output.degenerate.blank": 1}
    assert (report.images_requested, report.images_made, report.images_refused_by_output_policy) == (4, 3, 1)
    assert (report.approved, report.rejected, report.pending) == (1, 1, 1)
    assert report.share_approved == pytest.approx(1 / 3)
    assert report.median_hours_to_decision == pytest.approx(3.0)
    assert report.median_hours_to_approval == pytest.approx(2.0)
    assert report.compute_seconds == pytest.approx(5.4)  # the 100 s request is outside the range
    assert report.compute_seconds_per_image == pytest.approx(5.4 / 4)  # four images drawn, one refused
    assert report.cost_per_approved_image == pytest.approx(5.4 / 3600 * COST_PER_GPU_HOUR)
    assert report.currency == "EUR"
    assert sum(day["requests"] for day in report.daily) == 4 and report.daily[-1]["day"] == today.isoformat()


def test_an_empty_range_has_no_figures_to_divide(db):
    report = build_pilot_report(timezone.localdate(), timezone.localdate())
    assert report.requests == 0 and report.share_refused is None and report.share_approved is None
    assert report.compute_seconds_per_image is None and report.cost_per_approved_image is None
    with pytest.raises(ValueError, match="before the start date"):
        build_pilot_report(timezone.localdate(), timezone.localdate() - timedelta(days=1))


def test_command_text_json_and_bad_dates(pilot):
    today = timezone.localdate()
    start = (today - timedelta(days=7)).isoformat()
    out = StringIO()
    call_command("pilot_report", "--from", start, "--to", today.isoformat(), stdout=out)
    text = out.getvalue()
    assert "requests                   4" in text and "refused by usage policy    2 (50.0 %)" in text
    assert "median request->decision   3.00 h" in text and "EUR per approved image" in text
    out = StringIO()
    call_command("pilot_report", "--from", start, "--to", today.isoformat(), "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["requests"] == 4 and data["approved"] == 1 and data["cost_per_approved_image"] == pytest.approx(0.0054)
    with pytest.raises(CommandError, match="not a date"):
        call_command("pilot_report", "--from", "last week")
    with pytest.raises(CommandError, match="before --from"):
        call_command("pilot_report", "--from", today.isoformat(), "--to", start)


@pytest.mark.parametrize(("start", "end"), [("9999-12-30", "9999-12-31"), ("9999-12-31", "9999-12-31"),
                                            (None, "0001-01-01"), ("0001-01-01", "0001-01-03")])
def test_dates_at_the_ends_of_the_calendar_are_refused_not_a_crash(db, users, client, start, end):
    """The range runs to midnight after its last day: 9999-12-31 has none (OverflowError)."""
    args = (["--from", start] if start else []) + ["--to", end]
    with pytest.raises(CommandError, match="outside the dates a report can cover"):
        call_command("pilot_report", *args, stdout=StringIO())
    with pytest.raises(ValueError, match="outside the dates"):
        build_pilot_report(date.fromisoformat(start or end), date.fromisoformat(end))
    reviewer = users[1]
    reviewer.user_permissions.add(Permission.objects.get(codename="view_pilot_report"))
    client.force_login(reviewer)
    page = client.get("/admin/stackgan_django/generationrequest/pilot-report/", {"start": start or end, "end": end})
    assert page.status_code == 400 and b"outside the dates a report can cover" in page.content
    # The last day that has a following midnight still reports.
    assert build_pilot_report(date(9999, 12, 29), date(9999, 12, 30)).requests == 0


def test_chart_days_carry_the_year_when_the_range_spans_years(db):
    across = render_charts(build_pilot_report(date(2025, 12, 30), date(2026, 1, 2)))["daily"]
    assert "2025-12-31" in across and "2026-01-01" in across
    within = render_charts(build_pilot_report(date(2026, 3, 1), date(2026, 3, 4)))["daily"]
    assert "03-02" in within and "2026-03-02" not in within


def test_admin_page_renders_charts_and_json(pilot, users, client):
    reviewer = users[1]
    client.force_login(reviewer)
    url = "/admin/stackgan_django/generationrequest/pilot-report/"
    assert client.get(url).status_code == 403  # reviewing does not include the pilot's figures
    reviewer.user_permissions.add(Permission.objects.get(codename="view_pilot_report"))
    page = client.get(url)
    body = page.content.decode()
    assert page.status_code == 200 and body.count("<svg") >= 2
    assert "Images per day by review outcome" in body and "usage.blocked.sexual_content" in body
    assert 'src="http' not in body and 'href="http' not in body  # nothing loaded from another site
    today = timezone.localdate()
    data = client.get(url, {"start": (today - timedelta(days=7)).isoformat(), "end": today.isoformat(), "format": "json"}).json()
    assert data["requests"] == 4 and data["images_made"] == 3
    bad = client.get(url, {"start": "yesterday", "end": today.isoformat()})
    assert bad.status_code == 400 and b"Enter a valid date" in bad.content
    backwards = client.get(url, {"start": today.isoformat(), "end": (today - timedelta(days=3)).isoformat()})
    assert backwards.status_code == 400 and b"end date is before the start date" in backwards.content


def test_a_long_range_is_charted_by_week_or_month_not_by_day(db):
    """Ten years (the longest range allowed) drew a bar per day and outcome: 14,600 bars, 27 s of CPU
    and a 2.9 MB page on each view. Past a quarter the bars are weeks, past two years months; the
    figures and the JSON keep every day."""
    from stackgan_django.reports.pilot import chart_periods

    ten_years = build_pilot_report(date(2016, 12, 2), date(2026, 12, 1))
    assert len(ten_years.daily) == 3652
    unit, rows = chart_periods(ten_years)
    assert unit == "month" and len(rows) == 121 and rows[0]["day"] == "2016-12" and rows[-1]["day"] == "2026-12"
    chart = render_charts(ten_years)["daily"]
    assert "Images per month by review outcome" in chart and len(chart) < 300_000
    unit, rows = chart_periods(build_pilot_report(date(2026, 1, 1), date(2026, 12, 31)))
    assert unit == "week" and len(rows) == 53 and rows[0]["day"] == "2025-12-29"  # the Monday of its week
    unit, rows = chart_periods(build_pilot_report(date(2026, 3, 1), date(2026, 5, 31)))
    assert unit == "day" and len(rows) == 92


def test_weeks_and_months_sum_their_days(pilot):
    from stackgan_django.reports.pilot import chart_periods

    today = timezone.localdate()
    report = build_pilot_report(today - timedelta(days=400), today)
    unit, rows = chart_periods(report)
    assert unit == "week"
    for key in ("requests", "refused", "approved", "pending", "rejected", "revoked"):
        assert sum(row[key] for row in rows) == sum(day[key] for day in report.daily)
    assert sum(row["requests"] for row in rows) == 5  # the request of 90 days ago too
