"""Decisions: what a rule said, why, on what evidence, under which policy version."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Outcome(enum.StrEnum):
    ALLOW = "allow"
    REVIEW = "review"
    DENY = "deny"

    @property
    def severity(self) -> int:
        return {"allow": 0, "review": 1, "deny": 2}[self.value]

    @classmethod
    def parse(cls, value: str) -> Outcome:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"outcome must be one of allow, review, deny; got {value!r}") from None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    rule_id: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "rule_id": self.rule_id, "message": self.message, "evidence": self.evidence}


@dataclass
class Verdict:
    """All decisions of one check; the strictest outcome wins."""

    stage: str
    policy_version: str
    decisions: list[Decision] = field(default_factory=list)

    @property
    def outcome(self) -> Outcome:
        if not self.decisions:
            return Outcome.ALLOW
        return max((d.outcome for d in self.decisions), key=lambda o: o.severity)

    @property
    def denied(self) -> bool:
        return self.outcome is Outcome.DENY

    @property
    def needs_review(self) -> bool:
        return self.outcome is Outcome.REVIEW

    def reasons(self) -> list[str]:
        return [d.message for d in self.decisions if d.outcome is not Outcome.ALLOW]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "outcome": self.outcome.value,
            "policy_version": self.policy_version,
            "decisions": [d.to_dict() for d in self.decisions],
        }
