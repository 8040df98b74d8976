"""The recommendation: what to do, why (with the figures it used), what to run next, what to watch;
as wrapped text or one JSON object."""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass

from raykd.recommend.evidence import Evidence
from raykd.recommend.inputs import Inputs
from raykd.recommend.table import decide


@dataclass(frozen=True)
class Recommendation:
    strategy: str
    rule: str  # the row of docs/recommend_rules.md that decided
    reasons: tuple[str, ...]
    commands: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    evidence: Evidence | None = None  # the scored run weighed, if any


def recommend(inputs: Inputs, evidence: Evidence | None = None, config: str | None = None) -> Recommendation:
    """The advice for ``inputs``, decided by ``evidence`` when it holds a scored run (pure)."""
    rule, facts = decide(inputs, evidence, config)
    advice = rule.advise(facts)
    warnings = advice.warnings
    if evidence is not None and facts.evidence is None:
        warnings += (f"{evidence.source} has no task score (plain-text test data): the advice comes from the "
                     "counts, not the run",)
    return Recommendation(rule.strategy, rule.name, advice.reasons, advice.commands, warnings, facts.evidence)


def to_json(inputs: Inputs, rec: Recommendation) -> dict:
    return {"strategy": rec.strategy, "rule": rec.rule, "reasons": list(rec.reasons), "commands": list(rec.commands),
            "warnings": list(rec.warnings), "inputs": asdict(inputs),
            "evidence": asdict(rec.evidence) if rec.evidence else None}


def _fill(label: str, text: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=f"{label:<10}", subsequent_indent=" " * 10)


def to_text(rec: Recommendation) -> str:
    """The strategy, then each reason, command and warning on its own line (reasons and warnings wrapped)."""
    lines = [_fill("strategy:", f"{rec.strategy} (rule {rec.rule}, docs/recommend_rules.md)")]
    lines += [_fill("why:" if i == 0 else "", r) for i, r in enumerate(rec.reasons)]
    lines += [f"{'next:' if i == 0 else '':<10}{c}" for i, c in enumerate(rec.commands)]  # unwrapped: to paste
    lines += [_fill("warning:", w) for w in rec.warnings]
    return "\n".join(lines)
