"""manage.py pilot_report --from 2026-11-01 --to 2026-11-30 [--json]: what the pilot produced and cost."""

from __future__ import annotations

import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError, CommandParser

from stackgan_django.reports.pilot import ReportRangeError, build_pilot_report, check_range, default_range


def _date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{option} {text!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-11-30.") from None


def _fmt(value, suffix: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


class Command(BaseCommand):
    help = "Requests, images, refusals, approvals, time to decision and cost for a date range (both days included)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (default: 29 days before --to)")
        parser.add_argument("--to", dest="end", help="last day, included, YYYY-MM-DD (default: today)")
        parser.add_argument("--json", dest="as_json", action="store_true", help="print the figures as JSON")

    def handle(self, *args, start: str | None = None, end: str | None = None, as_json: bool = False, **options) -> None:
        default_start, default_end = default_range()
        end_day = _date(end, "--to") if end else default_end
        span = default_end - default_start
        # Clamped, so a --to near the calendar's start is refused by check_range, not an OverflowError.
        start_day = _date(start, "--from") if start else (end_day - span if end_day >= date.min + span else date.min)
        if end_day < start_day:
            raise CommandError(f"--to {end_day} is before --from {start_day}.")
        try:
            check_range(start_day, end_day)
        except ReportRangeError as exc:
            raise CommandError(str(exc)) from None
        report = build_pilot_report(start_day, end_day)
        if as_json:
            self.stdout.write(json.dumps(report.to_dict(), indent=2, sort_keys=True))
            return
        r = report
        cost = "not configured (STACKGAN['COST_PER_GPU_HOUR'])" if r.cost_per_gpu_hour is None else \
            f"{_fmt(r.cost_per_approved_image, ' ' + r.currency, 3)} per approved image " \
            f"({_fmt(r.total_cost, ' ' + r.currency, 2)} in all at {r.cost_per_gpu_hour} {r.currency} per GPU hour)"
        lines = [
            f"Pilot report {r.start} to {r.end} (requests made in this range)",
            f"  requests                   {r.requests:,}",
            f"  refused by usage policy    {r.requests_refused:,} ({_fmt(r.share_refused and 100 * r.share_refused, ' %')})",
            f"  failed / still waiting     {r.requests_failed:,} / {r.requests_waiting:,}",
            f"  images made                {r.images_made:,} (+{r.images_refused_by_output_policy:,} left out by the output policy)",
            f"  approved                   {r.approved:,} ({_fmt(r.share_approved and 100 * r.share_approved, ' %')} of images made);"
            f" rejected {r.rejected:,}, revoked {r.revoked:,}, waiting {r.pending:,}",
            f"  median request->decision   {_fmt(r.median_hours_to_decision, ' h', 2)}",
            f"  median request->approval   {_fmt(r.median_hours_to_approval, ' h', 2)}",
            f"  compute per image          {_fmt(r.compute_seconds_per_image, ' s', 2)} ({r.gpu_hours:.3f} GPU hours in all)",
            f"  cost                       {cost}",
            "  refusals by rule:" if r.refused_by_rule else "  refusals by rule:          none",
        ]
        lines += [f"    {count:>6,}  {rule}" for rule, count in r.refused_by_rule.items()]
        self.stdout.write("\n".join(lines))
