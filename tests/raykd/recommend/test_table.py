"""The decision table: each rule's conditions at their boundaries, the evidence rules on real reports,
and the generated docs page."""

import pytest

from raykd.recommend.answer import recommend
from raykd.recommend.evidence import read_evidence
from raykd.recommend.inputs import Inputs
from raykd.recommend.rules import (
    DISTIL_ONLY,
    FEW_LABELED,
    FINE_TUNE,
    FINE_TUNE_THEN_DISTIL,
    MANY_LABELED,
    MIN_UNLABELED,
    PROMPT,
    SMALL_RANK_LORA,
    STRATEGIES,
)
from raykd.recommend.table import DOCS_PAGE, RULES, markdown
from tests.conftest import REPO
from tests.raykd.recommend.runs import write_run


def rule_of(*args, evidence=None) -> str:
    return recommend(Inputs(*args), evidence).rule


# (performance, resources, labeled, unlabeled, time) -> the rule, on each side of each threshold
PRIOR_CASES = [
    (("high", "strict", 200, 4000, "medium"), "R8"),  # the demo's shape: fine-tune then distil
    (("high", "strict", 200, MIN_UNLABELED - 1, "medium"), "R9"),
    (("high", "strict", 200, MIN_UNLABELED, "medium"), "R8"),
    (("high", "strict", 50_000, 0, "medium"), "R9"),  # labels alone, however many: the curve's 0-unlabeled point
    (("high", "strict", 200, 4000, "low"), "R7"),  # no time to fine-tune the teacher
    (("high", "strict", FEW_LABELED - 1, 4000, "medium"), "R4"),
    (("high", "strict", FEW_LABELED - 1, MIN_UNLABELED - 1, "medium"), "R5"),
    (("low", "strict", FEW_LABELED, 50_000, "medium"), "R6"),
    (("low", "relaxed", 0, 0, "low"), "R1"),
    (("low", "moderate", 0, 0, "low"), "R3"),
    (("high", "moderate", FEW_LABELED - 1, 0, "medium"), "R2"),
    (("high", "moderate", FEW_LABELED - 1, 0, "low"), "R3"),
    (("high", "moderate", FEW_LABELED, 0, "medium"), "R12"),
    (("high", "relaxed", MANY_LABELED - 1, 0, "medium"), "R12"),
    (("high", "relaxed", MANY_LABELED, 0, "medium"), "R10"),
    (("high", "relaxed", MANY_LABELED, 0, "low"), "R12"),
    (("medium", "moderate", 1000, MIN_UNLABELED, "high"), "R11"),
    (("medium", "moderate", 1000, MIN_UNLABELED - 1, "high"), "R12"),
    (("low", "moderate", 1000, 50_000, "high"), "R12"),
]


@pytest.mark.parametrize(("args", "rule"), PRIOR_CASES)
def test_prior_rules_at_their_boundaries(args, rule):
    assert rule_of(*args) == rule


def test_each_prior_strategy_names_its_commands():
    for args, strategy, command in [
        (("high", "strict", 200, 4000, "medium"), FINE_TUNE_THEN_DISTIL, "raykd pipeline --config CONFIG.yaml"),
        (("high", "strict", 20, 50_000, "low"), DISTIL_ONLY, "distill.alpha=1"),
        (("high", "moderate", 50, 0, "medium"), SMALL_RANK_LORA, "finetune.lora_r=8"),
        (("low", "relaxed", 0, 0, "low"), PROMPT, "few-shot prompt"),
        (("high", "relaxed", 50_000, 0, "high"), FINE_TUNE, "finetune.method=full"),
    ]:
        rec = recommend(Inputs(*args))
        assert rec.strategy == strategy and any(command in c for c in rec.commands), rec


STRICT_HIGH = ("high", "strict", 200, 4000, "medium")


EVIDENCE_CASES = [
    (dict(teacher_hits=50, student_hits=48), STRICT_HIGH, "E6"),  # 96% >= 95%, gain well above 0
    (dict(teacher_hits=40, student_hits=38), STRICT_HIGH, "E6"),  # exactly 95%: keeps the bar
    (dict(teacher_hits=50, student_hits=47), STRICT_HIGH, "E7"),  # 94%: strict, distil and close the gap
    (dict(teacher_hits=50, student_hits=47), ("medium", "strict", 0, 0, "medium"), "E6"),  # bar 90%
    (dict(teacher_hits=50, student_hits=47), ("high", "relaxed", 0, 0, "medium"), "E8"),
    (dict(teacher_hits=50, student_hits=48, speedup=1.99), ("high", "moderate", 0, 0, "medium"), "E3"),
    (dict(teacher_hits=50, student_hits=48, speedup=1.99), STRICT_HIGH, "E2"),  # only a smaller student serves
    (dict(teacher_hits=50, student_hits=48, speedup=2.0), STRICT_HIGH, "E6"),
    (dict(teacher_hits=50, student_hits=11, baseline_hits=10), STRICT_HIGH, "E4"),  # +0.01: CI reaches 0
    (dict(teacher_hits=50, student_hits=11, baseline_hits=10), ("high", "moderate", 0, 0, "medium"), "E5"),
    (dict(teacher_hits=0, student_hits=20, baseline_hits=0), STRICT_HIGH, "E1"),  # a teacher at 0: no retention
]


@pytest.mark.parametrize(("run", "args", "rule"), EVIDENCE_CASES)
def test_evidence_rules_decide_a_measured_run_at_their_boundaries(tmp_path, run, args, rule):
    evidence = read_evidence(write_run(tmp_path / "run", **run))
    assert rule_of(*args, evidence=evidence) == rule


def test_the_answer_cites_the_figures_it_used(tmp_path):
    evidence = read_evidence(write_run(tmp_path / "run", teacher_hits=50, student_hits=48))
    assert evidence.retention_ci[0] < 0.96 < evidence.retention_ci[1]
    rec = recommend(Inputs(*STRICT_HIGH), evidence, "my.yaml")
    text = "\n".join(rec.reasons)
    assert f"+0.380 [{evidence.gain_ci[0]:+.3f}, {evidence.gain_ci[1]:+.3f}] on 100 test rows" in text
    assert "keeps 96% [" in text and "4.0x faster at batch 1" in text and "10.0% of the teacher's bytes" in text
    assert "teacher pass 145 s over 4,200 inputs" in text and "finetune 100 s" in text
    assert rec.commands[0] == "raykd pipeline --config my.yaml"


def test_a_plain_text_run_falls_back_to_the_priors_and_says_so(tmp_path):
    evidence = read_evidence(write_run(tmp_path / "run", None, None))
    rec = recommend(Inputs(*STRICT_HIGH), evidence)
    assert rec.rule == "R8" and rec.evidence is None and "no task score" in rec.warnings[-1]


def test_every_rule_has_boundary_cases_and_every_strategy_is_given():
    assert {rule for _, rule in PRIOR_CASES} | {rule for _, _, rule in EVIDENCE_CASES} == {r.name for r in RULES}
    reached = {recommend(Inputs(*a)).strategy for a in [
        ("low", "relaxed", 0, 0, "low"), ("high", "moderate", 50, 0, "medium"), ("high", "strict", 20, 50_000, "low"),
        ("high", "strict", 200, 4000, "medium"), ("high", "relaxed", 50_000, 0, "high")]}
    assert reached == set(STRATEGIES)


def test_the_rules_page_is_generated_from_the_table():
    page = REPO / DOCS_PAGE
    assert page.read_text() == markdown(), f"stale: run `python -m raykd.recommend.table > {DOCS_PAGE}`"
