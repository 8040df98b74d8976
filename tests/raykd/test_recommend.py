"""``raykd recommend``: the rule table row by row, the measured run it weighs, and its bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raykd import recommend as rc
from raykd.recommend import Inputs, RecommendError, main, read_measured, recommend

REPO = Path(__file__).resolve().parents[2]
STRONG_RUN = dict(teacher_hits=100, student_hits=96, teacher_latency=0.4, student_latency=0.1)  # 96%, 4x

# One case per row of the table in `recommend`'s docstring:
# rule -> (performance, resources, labeled, unlabeled, time), expected strategy, text the method must hold.
RULE_CASES = {
    "R1": (("low", "relaxed", 5000, 0, "high"), rc.PROMPT, "no training"),
    "R2": (("high", "moderate", 50, 0, "medium"), rc.SMALL_RANK_LORA,
           "big model: raykd finetune finetune.method=lora finetune.lora_r=8"),
    "R3": (("medium", "relaxed", 50, 100_000, "high"), rc.PROMPT, "no training"),
    "R4": (("high", "strict", 20, 50_000, "low"), rc.DISTIL_ONLY, "distill.alpha=1 "),
    "R5": (("medium", "strict", 20, 500, "high"), rc.SMALL_RANK_LORA, "models.teacher=<the small model>"),
    "R6": (("low", "strict", 20_000, 500_000, "high"), rc.FINE_TUNE, "models.teacher=<the small model> "
                                                                     "finetune.method=full"),
    "R7": (("high", "strict", 1000, 50_000, "low"), rc.DISTIL_ONLY, "distill.alpha=0.5"),
    "R8": (("high", "strict", 5000, 200_000, "medium"), rc.FINE_TUNE_THEN_DISTIL, "finetune.method=lora"),
    "R9": (("medium", "strict", 2000, 3000, "high"), rc.FINE_TUNE, "models.teacher=<the small model> "
                                                                   "finetune.method=lora"),
    "R10": (("high", "relaxed", 50_000, 0, "medium"), rc.FINE_TUNE, "finetune.method=full"),
    "R11": (("medium", "moderate", 1000, 100_000, "high"), rc.FINE_TUNE_THEN_DISTIL, "mid-sized student"),
    "R12": (("high", "relaxed", 50_000, 0, "low"), rc.FINE_TUNE, "finetune.method=lora"),
}
DISTIL_INPUTS = Inputs(*RULE_CASES["R8"][0])  # advice: fine-tune then distil
STRICT_FINETUNE_INPUTS = Inputs(*RULE_CASES["R9"][0])  # advice: fine-tune the small model, under strict resources


@pytest.mark.parametrize("rule", RULE_CASES)
def test_each_rule_row_gives_its_advice(rule):
    args, strategy, method_text = RULE_CASES[rule]
    rec = recommend(Inputs(*args))
    assert (rec.rule, rec.strategy) == (rule, strategy)
    assert method_text in rec.method and rec.reason and rec.measured is None


def test_every_rule_has_a_case_and_a_documented_row():
    names = [r.name for r in rc.RULES]
    assert names == list(RULE_CASES)  # a new rule needs its case here, in table order
    table = recommend.__doc__
    assert all(f"\n    {name} " in table for name in names)
    assert {strategy for _, strategy, _ in RULE_CASES.values()} == set(rc.STRATEGIES)  # every strategy is reachable


@pytest.mark.parametrize(("args", "rule"), [
    (("high", "strict", rc.FEW_LABELED - 1, 50_000, "medium"), "R4"),
    (("high", "strict", rc.FEW_LABELED, 50_000, "medium"), "R8"),
    (("high", "strict", 1000, rc.MIN_TRANSFER_SET - 1001, "medium"), "R9"),  # unlabeled + labeled = 9,999
    (("high", "strict", 1000, rc.MIN_TRANSFER_SET - 1000, "medium"), "R8"),
    (("high", "relaxed", rc.MANY_LABELED - 1, 0, "medium"), "R12"),
    (("high", "relaxed", rc.MANY_LABELED, 0, "medium"), "R10"),
])
def test_thresholds_are_where_the_constants_say(args, rule):
    assert recommend(Inputs(*args)).rule == rule


@pytest.mark.parametrize(("time", "method"), [("high", "finetune.method=full"), ("medium", "finetune.method=lora")])
def test_a_big_teacher_gets_a_full_fine_tune_only_with_many_labels_and_a_long_budget(time, method):
    assert method in recommend(Inputs("high", "strict", 50_000, 500_000, time)).method


def test_distilling_from_an_unfine_tuned_teacher_warns_to_check_the_teacher():
    for rule in ("R4", "R7"):
        rec = recommend(Inputs(*RULE_CASES[rule][0]))
        assert any("score it on your" in w for w in rec.warnings)
    assert recommend(DISTIL_INPUTS).warnings == ()


@pytest.mark.parametrize(("text", "level"), [("low", "low"), ("high", "high"), ("0.5", "low"), ("23.9", "low"),
                                             ("24", "medium"), ("167", "medium"), ("168", "high"), ("1000", "high")])
def test_time_budget_is_a_level_or_hours(text, level):
    assert rc.parse_time_budget(text) == level


@pytest.mark.parametrize("bad", [dict(performance="hgh"), dict(resources="tight"), dict(time_budget="soon"),
                                 dict(labeled=-1), dict(unlabeled=-5), dict(labeled=1.5), dict(labeled=True)])
def test_the_pure_api_refuses_bad_inputs(bad):
    fields = dict(performance="high", resources="strict", labeled=10, unlabeled=10, time_budget="low") | bad
    with pytest.raises(RecommendError, match=next(iter(bad))):
        Inputs(**fields)


# --- a measured run -------------------------------------------------------------------------------


def write_run(run: Path, teacher_hits: int | None, student_hits: int | None, teacher_latency: float,
              student_latency: float, examples: int = 100) -> Path:
    """``RUN/report/metrics.json`` as `raykd evaluate` writes it: the real ``build_report`` on given arms,
    then ``write_metrics`` of its non-dict values (ray_jobs/evaluate.py). ``None`` hits: plain text, no score.
    The teacher takes 1,000 bytes on disk and the student 100 (size ratio 10%)."""
    from raykd.config import load_config
    from raykd.evaluation.report import build_report
    from raykd.launch import write_metrics

    def arm(name: str, hits: int | None, latency: float, size: int) -> dict:
        (run / name).mkdir(parents=True, exist_ok=True)
        (run / name / "model.safetensors").write_bytes(b"\0" * size)
        scored = {} if hits is None else {"hits": [1] * hits + [0] * (examples - hits)}
        return {"score": None if hits is None else hits / examples, "loss": 0.5, "params": size,
                "latency_p50_s": latency, "throughput_per_s": 1 / latency} | scored

    arms = {"teacher": arm("teacher", teacher_hits, teacher_latency, 1000),
            "student": arm("student", student_hits, student_latency, 100),
            "baseline": arm("baseline", None if teacher_hits is None else 10, student_latency, 100)}
    report = build_report(load_config(None), arms, {a: run / a for a in arms}, examples)
    write_metrics(run / "report", {k: v for k, v in report.items() if not isinstance(v, dict)})
    return run


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def cli_args(inputs: Inputs) -> list[str]:
    return ["--performance", inputs.performance, "--resources", inputs.resources, "--labeled", str(inputs.labeled),
            "--unlabeled", str(inputs.unlabeled), "--time-budget", inputs.time_budget]


def test_the_real_report_is_read_and_quoted_in_the_reason(tmp_path):
    run = write_run(tmp_path / "run", **STRONG_RUN)
    measured = read_measured(run)
    assert measured.retention == pytest.approx(0.96) and measured.latency_speedup == pytest.approx(4.0)
    assert measured.size_ratio == pytest.approx(0.1) and measured.teacher_score == pytest.approx(1.0)
    rec = recommend(DISTIL_INPUTS, measured)
    assert "keeps 96% of the teacher's score (0.960 vs 1.000)" in rec.reason
    assert "4.0x faster at batch 1" in rec.reason and "10.0% of its bytes" in rec.reason
    assert rec.warnings == ()  # the run agrees with distilling


def test_distil_advice_warns_when_retention_is_low(tmp_path):
    run = write_run(tmp_path / "run", teacher_hits=50, student_hits=40, teacher_latency=0.4, student_latency=0.1)
    rec = recommend(DISTIL_INPUTS, read_measured(run))
    assert [w for w in rec.warnings if "retention 80% is below 90%" in w] and len(rec.warnings) == 1


def test_distil_advice_warns_when_the_student_is_not_much_faster(tmp_path):
    run = write_run(tmp_path / "run", teacher_hits=100, student_hits=100, teacher_latency=0.15, student_latency=0.1)
    rec = recommend(Inputs(*RULE_CASES["R4"][0]), read_measured(run))
    assert any("speedup 1.5x is below 2x" in w for w in rec.warnings)
    assert not any("retention" in w for w in rec.warnings)


@pytest.mark.parametrize(("inputs", "student_hits", "warns"), [
    (STRICT_FINETUNE_INPUTS, 96, True),  # strict, a student at 96%: serve it instead
    (Inputs(*RULE_CASES["R12"][0][:1], "moderate", *RULE_CASES["R12"][0][2:]), 95, True),
    (STRICT_FINETUNE_INPUTS, 94, False),  # below STRONG_RETENTION: no contradiction
    (Inputs(*RULE_CASES["R10"][0]), 96, False),  # relaxed: the big model may serve, no contradiction
])
def test_fine_tune_advice_under_tight_resources_warns_of_a_strong_student(tmp_path, inputs, student_hits, warns):
    run = write_run(tmp_path / "run", 100, student_hits, teacher_latency=0.4, student_latency=0.1)
    rec = recommend(inputs, read_measured(run))
    assert rec.strategy == rc.FINE_TUNE
    assert any("already keeps" in w for w in rec.warnings) == warns


def test_a_plain_text_report_has_no_retention_to_check(tmp_path):
    run = write_run(tmp_path / "run", None, None, teacher_latency=0.15, student_latency=0.1)
    rec = recommend(DISTIL_INPUTS, read_measured(run))
    assert read_measured(run).retention is None and "has no retention" in rec.reason
    assert len(rec.warnings) == 1 and "speedup" in rec.warnings[0]


def test_json_output_is_one_object_with_the_measured_run(tmp_path, capsys):
    run = write_run(tmp_path / "run", teacher_hits=50, student_hits=40, teacher_latency=0.4, student_latency=0.1)
    code, out, err = run_main(capsys, *cli_args(DISTIL_INPUTS), "--run-dir", str(run), "--json")
    assert code == 0 and err == "" and len(out.strip().splitlines()) == 1
    data = json.loads(out)
    assert (data["strategy"], data["rule"]) == (rc.FINE_TUNE_THEN_DISTIL, "R8")
    assert data["inputs"]["time_budget"] == "medium" and data["measured"]["retention"] == pytest.approx(0.8)
    assert len(data["warnings"]) == 1 and data["measured"]["source"].endswith("report/metrics.json")


def test_text_output_is_a_few_labelled_lines(capsys):
    code, out, _ = run_main(capsys, *cli_args(Inputs(*RULE_CASES["R4"][0])))
    assert code == 0 and out.startswith("strategy: distil only (rule R4)\nmethod:")
    assert "\nreason:" in out and "\nwarning:" in out and len(out.splitlines()) < 15


def test_hours_become_a_level_on_the_command_line(capsys):
    code, out, _ = run_main(capsys, "--performance", "high", "--resources", "strict", "--labeled", "5000",
                            "--unlabeled", "200000", "--time-budget", "12", "--json")
    assert code == 0 and json.loads(out)["rule"] == "R7"  # 12 h is a low budget: no time to fine-tune the teacher


# --- bad input: exit 2, one line ------------------------------------------------------------------

GOOD = cli_args(DISTIL_INPUTS)


def replaced(option: str, value: str) -> list[str]:
    args = list(GOOD)
    args[args.index(option) + 1] = value
    return args


@pytest.mark.parametrize(("argv", "named"), [
    (replaced("--performance", "hgh"), "--performance: invalid choice: 'hgh'"),
    (replaced("--resources", "tight"), "--resources: invalid choice: 'tight'"),
    (replaced("--time-budget", "soon"), "--time-budget: expected low, medium, high or a number of hours"),
    (replaced("--time-budget", "0"), "--time-budget: expected"),
    (replaced("--time-budget", "nan"), "--time-budget: expected"),
    (replaced("--labeled", "-3"), "--labeled: expected a whole number of examples >= 0, got '-3'"),
    (replaced("--unlabeled", "-1"), "--unlabeled: expected a whole number"),
    (replaced("--unlabeled", "1e4"), "--unlabeled: expected a whole number"),
    (GOOD[:-2], "required: --time-budget"),
])
def test_bad_options_exit_2_with_one_line(capsys, argv, named):
    code, out, err = run_main(capsys, *argv)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("raykd: error: ") and named in err


def test_bad_run_dirs_exit_2_with_one_line(tmp_path, capsys):
    empty, broken, old = tmp_path / "empty", tmp_path / "broken", tmp_path / "old"
    empty.mkdir()
    (broken / "report").mkdir(parents=True)
    (broken / "report" / "metrics.json").write_text("{not json")
    (old / "report").mkdir(parents=True)
    (old / "report" / "metrics.json").write_text(json.dumps({"retention": 0.9, "size_ratio": 0.1}))
    for run, named in ((tmp_path / "missing", "no such directory"), (empty, "no evaluation report"),
                       (broken, "unreadable report"), (old, "no 'latency_speedup'")):
        code, out, err = run_main(capsys, *GOOD, "--run-dir", str(run))
        assert code == 2 and out == "" and len(err.splitlines()) == 1, err
        assert err.startswith("raykd: error: ") and str(run) in err and named in err


@pytest.mark.slow
def test_python_dash_m_runs_it_and_fails_without_a_traceback(tmp_path):
    """The module entry point a user runs: JSON on success, one line and status 2 on a run without a report."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "raykd.recommend", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=120)

    ok = run(*GOOD, "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["strategy"] == rc.FINE_TUNE_THEN_DISTIL
    bad = run(*GOOD, "--run-dir", str(tmp_path))
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"raykd: error: --run-dir {tmp_path}: no evaluation report "
                                               f"({tmp_path / 'report' / 'metrics.json'} is missing); run "
                                               "`raykd evaluate` first"]
