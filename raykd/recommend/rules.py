"""What the decision table is made of: strategies, the prior rules' thresholds, a rule's conditions
(``Range`` for counts), the facts rules read and the advice they give. The table itself is
``raykd.recommend.table``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raykd.recommend.evidence import Evidence, distillation_pays, is_faster, keeps_bar
from raykd.recommend.inputs import Inputs

FINE_TUNE = "fine-tune"
FINE_TUNE_THEN_DISTIL = "fine-tune then distil"
DISTIL_ONLY = "distil only"
SMALL_RANK_LORA = "small-rank LoRA"
PROMPT = "prompt engineering"
STRATEGIES = (FINE_TUNE, FINE_TUNE_THEN_DISTIL, DISTIL_ONLY, SMALL_RANK_LORA, PROMPT)

# Below ~100 labeled examples a fine-tune memorises rather than generalises, and a held-out split big
# enough to tell a real gain from noise leaves nothing to train on.
FEW_LABELED = 100
# From ~10k labeled examples a full fine-tune pulls ahead of LoRA; below that LoRA matches it and
# overfits less.
MANY_LABELED = 10_000
# Unlabeled task inputs from which distillation beats training the small model on the labels alone:
# the smallest amount at which bench/distill_curve.py measured the gain's interval above 0 at every
# number of labels on the built-in task, where distilling on the labels alone (the teacher scoring only
# them) did not beat them. A user's task differs, which is what `--pilot` measures.
MIN_UNLABELED = 250
# A small-rank adapter: few enough weights that tens of examples teach the format without memorising.
SMALL_LORA_RANK = 8


@dataclass(frozen=True)
class Range:
    """A count condition: ``low <= value < high`` (``high`` None: no upper bound)."""

    low: int = 0
    high: int | None = None

    def __contains__(self, value: int) -> bool:
        return value >= self.low and (self.high is None or value < self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f">= {self.low:,}"
        return f"< {self.high:,}" if self.low == 0 else f"{self.low:,} to {self.high - 1:,}"


@dataclass(frozen=True)
class Facts:
    """The inputs and evidence as the rules read them: ``values`` names each condition's subject."""

    inputs: Inputs
    evidence: Evidence | None  # a scored run's measurements, else None
    values: dict
    config: str  # the user's config file, as the commands to run next name it

    @classmethod
    def of(cls, inputs: Inputs, evidence: Evidence | None = None, config: str | None = None) -> Facts:
        values = {"resources": inputs.resources, "performance": inputs.performance, "time": inputs.time_budget,
                  "labeled": inputs.labeled, "unlabeled": inputs.unlabeled}
        scored = evidence if evidence is not None and evidence.scored else None
        if scored:
            values |= {"teacher scores": bool(scored.teacher_score), "faster": is_faster(scored),
                       "pays": distillation_pays(scored),
                       "keeps bar": keeps_bar(scored, inputs.performance)}
        return cls(inputs, scored, values, config or "CONFIG.yaml")


@dataclass(frozen=True)
class Advice:
    reasons: tuple[str, ...]
    commands: tuple[str, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """One row: its conditions (subject -> allowed values or a ``Range``), strategy and advice."""

    name: str
    when: dict
    strategy: str
    summary: str  # the table's advice column
    advise: Callable[[Facts], Advice]
    on_evidence: bool = False  # decides a scored run's evidence (else: the counts, without evidence)

    def applies(self, f: Facts) -> bool:
        if self.on_evidence != (f.evidence is not None):
            return False
        return all(f.values[key] in allowed for key, allowed in self.when.items())
