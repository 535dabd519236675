"""Policy verdicts as rows: every stage (usage, output) keeps its decisions the same way."""

from __future__ import annotations

from policies import Verdict
from stackgan_django.models import Asset, GenerationRequest, PolicyDecision


def store_decisions(verdict: Verdict, request: GenerationRequest | None = None, asset: Asset | None = None) -> None:
    """One row per decision; a verdict where no rule fired still leaves a row saying so."""
    PolicyDecision.objects.bulk_create(decision_rows(verdict, request, asset))


def decision_rows(verdict: Verdict, request: GenerationRequest | None = None,
                  asset: Asset | None = None) -> list[PolicyDecision]:
    """The unsaved rows ``store_decisions`` writes, for a caller that writes several verdicts' rows
    in one INSERT."""
    rows = [
        PolicyDecision(request=request, asset=asset, stage=verdict.stage, outcome=d.outcome.value, rule_id=d.rule_id,
                       message=d.message, evidence=d.evidence, policy_version=verdict.policy_version)
        for d in verdict.decisions or []
    ]
    if not rows:
        rows = [PolicyDecision(request=request, asset=asset, stage=verdict.stage, outcome="allow",
                               rule_id=f"{verdict.stage}.no_rule_fired", message="No policy rule fired.",
                               policy_version=verdict.policy_version)]
    return rows
