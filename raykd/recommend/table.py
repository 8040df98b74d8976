"""The decision table, as data: every rule's conditions, its strategy and its advice, in one place.
``docs/recommend_rules.md`` is generated from it: ``python -m raykd.recommend.table > docs/recommend_rules.md``.

Rules are tried in order and the first whose conditions all hold decides. A run's evidence (a scored
report) is decided by the evidence rules (E); without it, or on plain text (no score), the prior rules
(R) answer from the counts. A condition on a level or a judgement lists the values it takes; one on a
count is a half-open range.
"""

from __future__ import annotations

from raykd.recommend import advice as a
from raykd.recommend.evidence import MIN_SPEEDUP, RETENTION_BAR, Evidence
from raykd.recommend.inputs import Inputs
from raykd.recommend.rules import (
    DISTIL_ONLY,
    FEW_LABELED,
    FINE_TUNE,
    FINE_TUNE_THEN_DISTIL,
    MANY_LABELED,
    MIN_UNLABELED,
    PROMPT,
    SMALL_LORA_RANK,
    SMALL_RANK_LORA,
    Facts,
    Range,
    Rule,
)

NOT_STRICT = ("moderate", "relaxed")
ABOVE_LOW = ("medium", "high")
FEW, ENOUGH = Range(0, FEW_LABELED), Range(MIN_UNLABELED)
RULES = (
    Rule("E1", {"teacher scores": (False,)}, FINE_TUNE, "the teacher scores 0: make it good at the task first",
         a.teacher_fails, on_evidence=True),
    Rule("E2", {"faster": (False,), "resources": ("strict",)}, FINE_TUNE_THEN_DISTIL,
         "the student is not faster and only a small model can serve: distil into a smaller one",
         a.smaller_student, on_evidence=True),
    Rule("E3", {"faster": (False,)}, FINE_TUNE, "the student is not faster: serve the fine-tuned teacher",
         a.not_faster, on_evidence=True),
    Rule("E4", {"pays": (False,), "resources": ("strict",)}, FINE_TUNE,
         "distillation adds nothing measurable: train the small model on the labels", a.labels_only_small,
         on_evidence=True),
    Rule("E5", {"pays": (False,)}, FINE_TUNE, "distillation adds nothing measurable: serve the fine-tuned "
         "teacher", a.labels_only_teacher, on_evidence=True),
    Rule("E6", {"pays": (True,), "keeps bar": (True,)}, FINE_TUNE_THEN_DISTIL,
         "the student beats the labels alone and keeps the bar: distil", a.distil_measured, on_evidence=True),
    Rule("E7", {"resources": ("strict",)}, FINE_TUNE_THEN_DISTIL, "only a small model can serve and "
         "distillation pays, below the bar: distil, then close the gap", a.distil_below_bar, on_evidence=True),
    Rule("E8", {}, FINE_TUNE, "the student misses the bar and the teacher can serve: serve it",
         a.teacher_over_student, on_evidence=True),
    Rule("R1", {"resources": ("relaxed",), "performance": ("low",)}, PROMPT, "prompt the big model",
         a.prompt_low_bar),
    Rule("R2", {"resources": NOT_STRICT, "performance": ("high",), "labeled": FEW, "time": ABOVE_LOW},
         SMALL_RANK_LORA, f"LoRA of rank {SMALL_LORA_RANK} on the big model", a.small_lora_big),
    Rule("R3", {"resources": NOT_STRICT, "labeled": FEW}, PROMPT, "prompt; labels as demonstrations and "
         "test set", a.prompt_few_labels),
    Rule("R4", {"resources": ("strict",), "labeled": FEW, "unlabeled": ENOUGH}, DISTIL_ONLY,
         "distil an existing teacher on the unlabeled inputs (alpha 1)", a.distil_unlabeled),
    Rule("R5", {"resources": ("strict",), "labeled": FEW}, SMALL_RANK_LORA, "small-rank LoRA on the small "
         "model; collect unlabeled inputs", a.small_lora_small),
    Rule("R6", {"resources": ("strict",), "performance": ("low",)}, FINE_TUNE,
         "fine-tune the small model on the labels", a.finetune_small),
    Rule("R7", {"resources": ("strict",), "unlabeled": ENOUGH, "time": ("low",)}, DISTIL_ONLY,
         "distil an existing teacher (alpha 0.5): no time to fine-tune it", a.distil_short_time),
    Rule("R8", {"resources": ("strict",), "unlabeled": ENOUGH}, FINE_TUNE_THEN_DISTIL,
         "fine-tune the teacher, then distil", a.strict_pipeline),
    Rule("R9", {"resources": ("strict",)}, FINE_TUNE, "fine-tune the small model; too few inputs to distil",
         a.finetune_small),
    Rule("R10", {"resources": ("relaxed",), "performance": ("high",), "labeled": Range(MANY_LABELED),
                 "time": ABOVE_LOW}, FINE_TUNE, "full fine-tune of the big model", a.full_finetune),
    Rule("R11", {"resources": ("moderate",), "performance": ABOVE_LOW, "unlabeled": ENOUGH, "time": ("high",)},
         FINE_TUNE_THEN_DISTIL, "fine-tune, then distil to a mid-sized student", a.moderate_pipeline),
    Rule("R12", {}, FINE_TUNE, "LoRA fine-tune (rank 16)", a.lora),
)


def decide(inputs: Inputs, evidence: Evidence | None = None, config: str | None = None) -> tuple[Rule, Facts]:
    """The first rule that applies (there always is one: E8 with evidence, R12 without)."""
    facts = Facts.of(inputs, evidence, config)
    return next(r for r in RULES if r.applies(facts)), facts


DOCS_PAGE = "docs/recommend_rules.md"
SUBJECTS = (("teacher scores", "teacher scores > 0"), ("resources", "resources"), ("performance", "performance"),
            ("labeled", "labeled"), ("unlabeled", "unlabeled"), ("time", "time"),
            ("faster", f"speedup >= {MIN_SPEEDUP:g}x"), ("pays", "gain CI above 0"), ("keeps bar", "retention >= bar"))


def _cell(allowed) -> str:
    if isinstance(allowed, Range):
        return str(allowed)
    return ", ".join("yes" if v is True else "no" if v is False else v for v in allowed)


def markdown() -> str:
    """docs/recommend_rules.md: the table, its thresholds, and the retention bars."""
    head = ["rule", *(title for _, title in SUBJECTS), "strategy", "advice"]
    lines = ["# The recommend rules (generated)", "",
             f"Generated by `python -m raykd.recommend.table > {DOCS_PAGE}` from `raykd/recommend/table.py`; a test "
             "fails when this page is stale. How the rules are used: [recommend.md](recommend.md).", "",
             "Rules are tried top to bottom and the first whose every condition holds decides; a blank cell is "
             "any value. E rules decide a run's scored evidence (`--run-dir` or `--pilot`); R rules answer from "
             "the counts when there is none.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in RULES:
        cells = [_cell(r.when[key]) if key in r.when else "" for key, _ in SUBJECTS]
        lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {r.strategy} | {r.summary} |")
    bars = ", ".join(f"{level} {bar:.0%}" for level, bar in RETENTION_BAR.items())
    lines += ["", "Thresholds:", "",
              f"- few labeled: < {FEW_LABELED:,}; many labeled: >= {MANY_LABELED:,};",
              f"- enough unlabeled inputs to distil (`MIN_UNLABELED`): >= {MIN_UNLABELED:,}, set from "
              "`bench/distill_curve.py` on the built-in task ([distill_curve.png](distill_curve.png), "
              "[benchmarks.md](benchmarks.md)): a user's task differs, which `--pilot` measures;",
              f"- the retention bar by `--performance`: {bars}; a worthwhile speedup: >= {MIN_SPEEDUP:g}x at batch 1;",
              "- a gain pays when its paired 95% interval (student - labels-only student, same test rows) is above 0."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
