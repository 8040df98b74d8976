"""``raykd recommend`` as a user runs it: options, one-line errors, a run's evidence, and the pilot."""

import json

import pytest

from ray_jobs.recommend import PILOT_TEST, main, pilot_config
from raykd.config import load_config
from raykd.recommend.inputs import parse_time_budget
from tests.conftest import DEMO, raykd
from tests.raykd.recommend.runs import write_run

COUNTS = ["--performance", "high", "--resources", "strict", "--labeled", "200", "--unlabeled", "4000"]


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_demo_shape_answers_distil_without_a_run(capsys):
    code, out, err = run_main(capsys, *COUNTS, "--json")
    data = json.loads(out)
    assert code == 0 and err == "" and (data["strategy"], data["rule"]) == ("fine-tune then distil", "R8")
    assert any("--pilot" in c for c in data["commands"])


def test_a_run_decides_and_the_levels_default_with_a_note(tmp_path, capsys):
    run = write_run(tmp_path / "run", teacher_hits=50, student_hits=48)
    code, out, _ = run_main(capsys, "--run-dir", str(run))
    assert code == 0 and out.startswith("strategy: fine-tune then distil (rule E6")
    assert "\nnext:     raykd pipeline --config CONFIG.yaml\n" in out
    assert "assumed --performance high" in out and "assumed --resources strict" in out


@pytest.mark.parametrize(("text", "level"), [("low", "low"), ("0.5", "low"), ("23.9", "low"), ("24", "medium"),
                                             ("167", "medium"), ("168", "high")])
def test_time_budget_is_a_level_or_hours(text, level):
    assert parse_time_budget(text) == level


@pytest.mark.parametrize(("argv", "named"), [
    (["--performance", "hgh"], "--performance: invalid choice: 'hgh'"),
    ([*COUNTS, "--time-budget", "0"], "--time-budget: expected low, medium, high or a number of hours"),
    ([*COUNTS[:-2], "--unlabeled", "1e4"], "--unlabeled: expected a whole number"),
    (COUNTS[:4], "--labeled and --unlabeled are needed without a run"),
    (["--pilot"], "--pilot needs --config FILE"),
    (["--pilot", "--config", "x.yaml", "--run-dir", "r"], "give --pilot or --run-dir, not both"),
    ([*COUNTS, "distill.alpha=1"], "unexpected arguments distill.alpha=1"),
    (["--run-dir", "/nonexistent/run"], "--run-dir /nonexistent/run: no such directory"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, named):
    code, out, err = run_main(capsys, *argv)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and named in err, err


def test_a_run_without_a_score_needs_the_counts(tmp_path, capsys):
    run = write_run(tmp_path / "run", None, None)
    code, out, err = run_main(capsys, "--run-dir", str(run))
    assert code == 2 and out == "" and "has no task score" in err and "--labeled" in err
    code, out, _ = run_main(capsys, "--run-dir", str(run), *COUNTS[4:])
    assert code == 0 and "(rule R8" in out and "no task score" in out


def test_bad_reports_exit_2_with_one_line(tmp_path, capsys):
    empty, broken, old = tmp_path / "empty", tmp_path / "broken", tmp_path / "old"
    empty.mkdir()
    (broken / "report").mkdir(parents=True)
    (broken / "report" / "metrics.json").write_text("{not json")
    (old / "report").mkdir(parents=True)
    (old / "report" / "metrics.json").write_text(json.dumps({"retention": 0.9, "size_ratio": 0.1}))
    costly = write_run(tmp_path / "costly", teacher_hits=50, student_hits=48)
    (costly / "teacher_cache" / "manifest.json").write_text(json.dumps({"rows": 10, "teacher_forward_s": "slow"}))
    for run, named in ((empty, "no evaluation report"), (broken, "unreadable"), (old, "no 'latency_speedup'"),
                       (costly, "'teacher_forward_s' is 'slow', not a number")):
        code, out, err = run_main(capsys, "--run-dir", str(run))
        assert code == 2 and out == "" and len(err.splitlines()) == 1 and named in err, err


def test_the_pilot_is_the_config_scaled_down_under_run_pilot():
    cfg = load_config(DEMO, ["run_dir=/tmp/x", "data.train_rows=50"])
    pilot = pilot_config(cfg)
    assert pilot.run_dir == "/tmp/x/pilot" and pilot.data.train_rows == 50 and pilot.data.unlabeled_rows == 1000
    assert pilot.data.eval_examples == PILOT_TEST and pilot.finetune.steps == 40 and pilot.distill.steps == 60
    assert pilot.distill.checkpoint_every <= 60 and pilot.distill.alpha == cfg.distill.alpha


@pytest.mark.slow
def test_a_pilot_on_the_demo_config_answers_from_what_it_measured(tmp_path):
    result = raykd("recommend", "--pilot", "--config", str(DEMO), f"run_dir={tmp_path}", "--json")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["rule"].startswith("E") and data["evidence"]["test_examples"] == PILOT_TEST
    low, high = data["evidence"]["gain_ci"]
    assert low <= data["evidence"]["gain"] <= high
    assert (tmp_path / "pilot" / "report" / "metrics.json").exists() and not (tmp_path / "teacher").exists()
    manifest = json.loads((tmp_path / "pilot" / "teacher_cache" / "manifest.json").read_text())
    assert manifest["rows"] == 200 + 1000
    assert any(r.startswith("distilled student - labels-only student") for r in data["reasons"])
