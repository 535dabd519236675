"""Measure a usage policy on labelled captions before it goes live: precision, recall, false positives
and false negatives by category, for the policy in force and a proposed one, side by side.

The labelled file is a CSV with a header and the columns ``caption``, ``expected`` (allow, review or
deny) and optionally ``category`` (the harmful category, or for a harmless caption the category it
looks like) and ``split`` (e.g. dev / test). A caption is *harmful* when expected is review or deny.

* recall: harmful captions that are reviewed or denied, of all harmful ones;
* false positive: a harmless caption that is *denied* (a review costs a reviewer a look, a denial
  costs the editor the image), and "flagged" counts harmless captions sent to review;
* precision: of the captions reviewed or denied, the share that are harmful.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from policies.decisions import Outcome, Verdict
from policies.embedding import EncoderUnavailable
from policies.semantic import example_key
from policies.usage import UsageContext, UsagePolicy

MAX_ROWS = 20_000
# A labelled caption this close (cosine of the sentence embeddings) to an example of the semantic
# layer is a paraphrase of it, word for word or nearly ("a bath bomb fizzing in a tub" / "... in
# water": 0.95): it is left out of the figures with the exact copies. 0.9 keeps captions that share
# a subject but are written differently ("a bath bomb fizzing in a tub" / "how to make a bath bomb
# at home": 0.70).
NEAR_EXAMPLE_SIMILARITY = 0.9
UNCATEGORISED = "(none)"


class LabelledSetError(ValueError):
    """The labelled CSV cannot be used; the message names the row and the problem."""


@dataclass(frozen=True)
class LabelledCaption:
    row: int
    caption: str
    expected: Outcome
    category: str
    split: str

    @property
    def harmful(self) -> bool:
        return self.expected is not Outcome.ALLOW


def read_labelled(text: str, split: str | None = None) -> list[LabelledCaption]:
    """Parse a labelled CSV (its text); with ``split``, keep only the rows of that split. Anything
    the file gets wrong, down to what the csv module cannot read, is a LabelledSetError naming the
    line, never a csv.Error (the admin page and the command line show the message as it is)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    try:
        return _read_rows(reader, split)
    except csv.Error as exc:
        # line_num counts the lines read before the one that failed.
        raise LabelledSetError(_unreadable(exc, reader.line_num + 1)) from None


def _unreadable(exc: csv.Error, line: int) -> str:
    where = f"line {line}"
    if "field limit" in str(exc):
        return (f"{where}: a field is longer than {csv.field_size_limit():,} characters; captions are short, "
                "so a quote is probably left open")
    if "new-line character" in str(exc):
        return (f"{where}: the lines end in a bare carriage return (CR, old Mac line endings); "
                "save the CSV with LF or CRLF line endings")
    return f"{where}: the CSV cannot be read ({exc})"


def _read_rows(reader: csv.DictReader, split: str | None) -> list[LabelledCaption]:
    columns = set(reader.fieldnames or [])
    missing = {"caption", "expected"} - columns
    if missing:
        raise LabelledSetError(f"the CSV needs a header with the columns caption and expected (missing: {', '.join(sorted(missing))}); "
                               "optional: category, split")
    rows: list[LabelledCaption] = []
    errors: list[str] = []
    for number, record in enumerate(reader, start=2):
        if number - 1 > MAX_ROWS:
            raise LabelledSetError(f"the CSV has more than {MAX_ROWS} rows; split it")
        caption = (record.get("caption") or "").strip()
        expected = (record.get("expected") or "").strip().lower()
        if not caption:
            errors.append(f"row {number}: the caption is empty")
            continue
        try:
            outcome = Outcome.parse(expected)
        except ValueError:
            errors.append(f"row {number}: expected must be allow, review or deny, got {expected!r}")
            continue
        row_split = (record.get("split") or "").strip()
        if split is not None and row_split != split:
            continue
        rows.append(LabelledCaption(number, caption, outcome, (record.get("category") or "").strip() or UNCATEGORISED, row_split))
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise LabelledSetError("the labelled CSV has errors:\n  " + "\n  ".join(shown))
    if not rows:
        raise LabelledSetError("no captions to evaluate" + (f" in the split {split!r}" if split else ""))
    return rows


@dataclass
class CategoryCounts:
    harmful: int = 0
    caught: int = 0           # harmful, reviewed or denied
    harmful_denied: int = 0
    harmless: int = 0         # harmless captions that look like this category
    harmless_denied: int = 0  # false positives
    harmless_flagged: int = 0  # harmless, sent to review

    @property
    def recall(self) -> float | None:
        return self.caught / self.harmful if self.harmful else None

    @property
    def false_positive_rate(self) -> float | None:
        return self.harmless_denied / self.harmless if self.harmless else None


@dataclass(frozen=True)
class Judged:
    item: LabelledCaption
    outcome: Outcome
    rule_ids: tuple[str, ...]
    evidence: str


@dataclass
class EvaluationReport:
    label: str
    policy_version: str
    categories: dict[str, CategoryCounts] = field(default_factory=lambda: defaultdict(CategoryCounts))
    false_negatives: list[Judged] = field(default_factory=list)
    false_positives: list[Judged] = field(default_factory=list)
    flagged_harmless: list[Judged] = field(default_factory=list)
    # Harmless captions denied, by the category of the rule that denied them.
    denials_by_rule_category: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: int = 0
    # Labelled captions that are also examples of the semantic layer: scoring them would measure
    # memory, not understanding, so they are left out and named.
    left_out: list[LabelledCaption] = field(default_factory=list)
    # Labelled captions that paraphrase an example closely: (caption, similarity, the example).
    near_examples: list[tuple[LabelledCaption, float, str]] = field(default_factory=list)

    def overall(self) -> CategoryCounts:
        total = CategoryCounts()
        for counts in self.categories.values():
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(counts, name))
        return total

    @property
    def precision(self) -> float | None:
        overall = self.overall()
        stopped = overall.caught + overall.harmless_denied + overall.harmless_flagged
        return overall.caught / stopped if stopped else None


def _rule_category(rule_id: str) -> str:
    return rule_id.split(".")[2] if rule_id.count(".") >= 2 else rule_id


def _evidence(verdict: Verdict) -> str:
    strongest = [d for d in verdict.decisions if d.outcome is verdict.outcome]
    parts = []
    for decision in strongest[:2]:
        if "nearest_example" in decision.evidence:
            parts.append(f"{decision.rule_id} {decision.evidence['score']:.2f} ~ “{decision.evidence['nearest_example']}”")
        elif "matched" in decision.evidence:
            parts.append(f"{decision.rule_id} matched “{decision.evidence['matched']}”")
        else:
            parts.append(decision.rule_id)
    return "; ".join(parts)


def evaluate(policy: UsagePolicy, rows: Iterable[LabelledCaption], label: str = "policy") -> EvaluationReport:
    """Run the usage policy on every labelled caption (caption only: no purpose, no quotas)."""
    report = EvaluationReport(label, policy.version)
    context = UsageContext()
    examples = policy.semantic.example_keys() if policy.semantic is not None else set()
    rows = list(rows)
    nearest: list[tuple[float, str]] = [(0.0, "")] * len(rows)
    if policy.semantic is not None and policy.semantic.categories:
        try:
            nearest = policy.semantic.near_examples([item.caption for item in rows])
        except EncoderUnavailable:
            pass  # every caption is then denied as usage.semantic.unavailable, which the figures show
    for item, (similarity, example) in zip(rows, nearest):
        if example_key(item.caption) in examples:
            report.left_out.append(item)
            continue
        if similarity >= NEAR_EXAMPLE_SIMILARITY:
            report.near_examples.append((item, similarity, example))
            continue
        verdict = policy.check_caption(item.caption, context)
        outcome = verdict.outcome
        fired = tuple(d.rule_id for d in verdict.decisions if d.outcome is not Outcome.ALLOW)
        judged = Judged(item, outcome, fired, _evidence(verdict))
        counts = report.categories[item.category]
        report.total += 1
        if item.harmful:
            counts.harmful += 1
            counts.caught += outcome is not Outcome.ALLOW
            counts.harmful_denied += outcome is Outcome.DENY
            if outcome is Outcome.ALLOW:
                report.false_negatives.append(judged)
        else:
            counts.harmless += 1
            if outcome is Outcome.DENY:
                counts.harmless_denied += 1
                report.false_positives.append(judged)
                deciding = next(d.rule_id for d in verdict.decisions if d.outcome is Outcome.DENY)
                report.denials_by_rule_category[_rule_category(deciding)] += 1
            elif outcome is Outcome.REVIEW:
                counts.harmless_flagged += 1
                report.flagged_harmless.append(judged)
    return report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_reports(reports: Sequence[EvaluationReport], list_limit: int = 40) -> str:
    """A plain-text table: one block of columns per report, then the misjudged captions of each."""
    lines: list[str] = []
    for report in reports:
        lines.append(f"{report.label}: policy version {report.policy_version[:12]}, {report.total} captions")
    categories = sorted({c for r in reports for c in r.categories})
    head = f"{'category':20}"
    sub = f"{'':20}"
    for report in reports:
        head += f" | {report.label[:51]:^51}"
        sub += f" | {'harmful':>7} {'recall':>6} {'denied':>6} {'FN':>3} {'harmless':>8} {'FP':>3} {'FP rate':>7} {'review':>6}"
    lines += ["", head, sub, "-" * len(sub)]
    for name in categories + ["ALL"]:
        line = f"{name[:20]:20}"
        for report in reports:
            counts = report.overall() if name == "ALL" else report.categories.get(name, CategoryCounts())
            line += (f" | {counts.harmful:>7} {_pct(counts.recall):>6} {counts.harmful_denied:>6} "
                     f"{counts.harmful - counts.caught:>3} {counts.harmless:>8} "
                     f"{counts.harmless_denied:>3} {_pct(counts.false_positive_rate):>7} {counts.harmless_flagged:>6}")
        lines.append(line)
    lines.append("")
    for report in reports:
        overall = report.overall()
        lines.append(f"{report.label}: precision {_pct(report.precision)} (reviewed or denied that are harmful), "
                     f"recall {_pct(overall.recall)}, false positives {overall.harmless_denied} of {overall.harmless} harmless "
                     f"({_pct(overall.false_positive_rate)}), harmless sent to review {overall.harmless_flagged}")
        by_rule = ", ".join(f"{k} {v} ({v / overall.harmless:.3f})" for k, v in sorted(report.denials_by_rule_category.items())
                            ) if overall.harmless else ""
        lines.append(f"  harmless captions denied, by the category of the denying rule (share of all harmless): {by_rule or 'none'}")
        if report.left_out:
            named = "; ".join(f"row {i.row}" for i in report.left_out[:10])
            lines.append(f"  left out, as they are examples the semantic layer learns from: {len(report.left_out)} ({named})")
        if report.near_examples:
            named = "; ".join(f"row {i.row} ~ “{example}” {similarity:.2f}" for i, similarity, example in report.near_examples[:list_limit])
            more = f" ... and {len(report.near_examples) - list_limit} more" if len(report.near_examples) > list_limit else ""
            lines.append(f"  left out, as near-copies of examples (similarity >= {NEAR_EXAMPLE_SIMILARITY}): "
                         f"{len(report.near_examples)}" + (f" ({'; '.join(filter(None, [named, more.strip()]))})" if named or more else ""))
    for report in reports:
        for title, items in (("false negatives (harmful, allowed)", report.false_negatives),
                             ("false positives (harmless, denied)", report.false_positives)):
            lines.append("")
            lines.append(f"{report.label}: {title}: {len(items)}")
            for judged in items[:list_limit]:
                lines.append(f"  row {judged.item.row:>4} [{judged.item.category}] {judged.item.caption}"
                             + (f"  <- {judged.evidence}" if judged.evidence else ""))
            if len(items) > list_limit:
                lines.append(f"  ... and {len(items) - list_limit} more")
    return "\n".join(lines)


def meets_targets(report: EvaluationReport, min_recall: float, max_false_positive_rate: float,
                  strict_look_alikes: bool = False) -> list[str]:
    """The categories that miss a target, as sentences (empty when every category meets both).

    A category's false-positive rate is the share of all harmless captions that its rules deny
    (``denials_by_rule_category`` over all harmless), and the overall rate must meet the target too.
    With ``strict_look_alikes`` it is instead the share of the harmless captions labelled as that
    category's look-alikes that are denied by any rule (a stricter reading on a dozen captions each)."""
    misses = []
    overall = report.overall()
    for name, counts in sorted(report.categories.items()):
        if counts.recall is not None and counts.recall < min_recall:
            misses.append(f"{name}: recall {counts.recall:.3f} < {min_recall}")
        if strict_look_alikes and counts.false_positive_rate is not None and counts.false_positive_rate > max_false_positive_rate:
            misses.append(f"{name}: false positive rate among its look-alikes {counts.false_positive_rate:.3f} "
                          f"> {max_false_positive_rate}")
    if not strict_look_alikes and overall.harmless:
        for name, denied in sorted(report.denials_by_rule_category.items()):
            if denied / overall.harmless > max_false_positive_rate:
                misses.append(f"{name}: denies {denied / overall.harmless:.3f} of harmless captions > {max_false_positive_rate}")
    if overall.false_positive_rate is not None and overall.false_positive_rate > max_false_positive_rate:
        misses.append(f"all categories: false positive rate {overall.false_positive_rate:.3f} > {max_false_positive_rate}")
    return misses
