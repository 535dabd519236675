"""What the person who asked for images learns about a policy decision: the rule, its category and
the reason in words. The semantic layer's scores, thresholds and nearest examples are for compliance
staff only: shown to the requester after every refusal, they were an oracle for writing captions that
score just under a threshold (the policy evaluation page is restricted to reviewers for the same
reason)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from stackgan_django.access import REVIEW_ASSET

# The parts of the semantic layer's messages (policies/semantic.py) that quote its examples or its
# thresholds. The caption's own words ("matched “…”", "asked for as instructions: “…”") stay: the
# requester wrote them.
UNDISCLOSED_IN_MESSAGES = (
    re.compile(r" ?\(closest example: “[^”]*”\)"),
    re.compile(r"; closest harmful act: “[^”]*”"),
    re.compile(r" ?\(every score below [0-9.]+\)"),
)


def sees_policy_evidence(user: Any) -> bool:
    """Compliance staff (the review permission) see every decision in full; everyone else sees what
    a requester may learn."""
    return bool(user and getattr(user, "is_authenticated", False) and user.has_perm(REVIEW_ASSET))


def requester_message(message: str, evidence: Mapping[str, Any] | None = None) -> str:
    """``message`` without the nearest examples and score lines the semantic layer writes into it."""
    text = message or ""
    for pattern in UNDISCLOSED_IN_MESSAGES:
        text = pattern.sub("", text)
    # "… does not generate. (closest example: …); the caption negates it …" loses its example.
    text = text.replace(".;", ";")
    example = (evidence or {}).get("nearest_example")
    if isinstance(example, str) and example.strip() and example in text:
        # A message worded in a way the patterns above do not know: keep the reason before its
        # details rather than let an example through.
        text = text.split(" (", 1)[0].split(f"“{example}”", 1)[0].rstrip(" :;,(")
    return text


def decision_category(evidence: Mapping[str, Any] | None) -> str:
    """The policy category a decision is about ("sexual content"), or "" when it names none."""
    category = (evidence or {}).get("category")
    return category.replace("_", " ") if isinstance(category, str) else ""


def requester_decision(rule_id: str, message: str, evidence: Mapping[str, Any] | None) -> dict[str, str]:
    """One decision as a requester (an editor, an API client) may read it."""
    return {"rule_id": rule_id, "category": decision_category(evidence),
            "message": requester_message(message, evidence)}
