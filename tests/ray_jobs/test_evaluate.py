"""The report: real measurements of teacher, student and a no-teacher baseline."""

import json
import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from raykd.builtin.data import generate_split
from tests.conftest import DEMO, raykd

pytestmark = pytest.mark.slow


def test_report_compares_teacher_student_and_baseline(student_run, head_env):
    run, overrides = student_run
    raykd("evaluate", "--config", str(DEMO), *overrides, env=head_env)
    report = json.loads((run / "report" / "report.json").read_text())
    for key in ("teacher_score", "student_score", "baseline_score", "retention", "params_ratio", "size_ratio",
                "latency_speedup"):
        assert key in report
    assert report["params_ratio"] < 0.25 and report["size_ratio"] < 0.25
    assert report["latency_speedup"] > 1  # measured side by side in one worker
    assert report["arms"]["baseline"]["params"] == report["arms"]["student"]["params"]
    assert (run / "baseline" / "metrics.json").exists()
    assert (run / "report" / "report.png").stat().st_size > 1000
    assert "student keeps" in (run / "report" / "report.md").read_text()
    for arm in ("teacher", "student", "baseline"):  # 95% bootstrap intervals over the test examples
        low, high = report["arms"][arm]["score_ci"]
        assert low <= report[f"{arm}_score"] <= high and "hits" not in report["arms"][arm]
    low, high = report["gain_over_baseline_ci"]
    assert low <= report["gain_over_baseline"] <= high and "95% CI" in (run / "report" / "report.md").read_text()
    low, high = report["retention_ci"]  # the student's share of the teacher's score, paired like the gain
    assert low <= report["retention"] <= high
    draft = report["draft"]  # the student as the teacher's speculative draft, against its undistilled base
    student, base = draft["drafts"]["student"], draft["drafts"]["base"]
    assert draft["tokens"] > 0 and set(draft["drafts"]) == {"student", "baseline", "base"}
    assert 0 < base["acceptance"] < student["acceptance"] < 1 and draft["student_minus_base"]["difference_ci"][0] > 0
    assert student["cost_ratio"] == pytest.approx(1 / report["latency_speedup"])
    assert student["accepted_length"]["1"] < student["accepted_length"]["8"] <= 9
    assert "As the teacher's speculative draft" in (run / "report" / "report.md").read_text()
    [board] = (run / "report" / "tensorboard").iterdir()  # the default tracker: the table, the plot, the text
    events = EventAccumulator(str(board)).Reload()
    student_low = report["arms"]["student"]["score_ci"][0]
    assert events.Scalars("arms/student/score_ci_low")[0].value == pytest.approx(student_low)
    assert events.Tags()["images"] == ["report.png"] and "report.md/text_summary" in events.Tags()["tensors"]


def test_evaluate_without_a_student_says_what_to_run(head_env, tmp_path):
    proc = raykd("evaluate", "--config", str(DEMO), f"run_dir={tmp_path}", check=False, timeout=300, env=head_env)
    assert proc.returncode == 2 and "run `raykd finetune` first" in proc.stderr


def test_plain_text_test_data_gets_a_loss_report(student_run, head_env, tmp_path):
    """Plain text ({"text": ...}) is valid held-out data: no exact-match score, the report compares losses."""
    run, overrides = student_run
    plain = tmp_path / "test.jsonl"
    plain.write_text("".join(json.dumps({"text": r["prompt"] + r["completion"]}) + "\n"
                             for r in generate_split("test")[:64]))
    raykd("evaluate", "--config", str(DEMO), *overrides, f"data.test={plain}", env=head_env)
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["student_score"] is None and report["retention"] is None and report["gain_over_baseline_ci"] is None
    assert all(0 < report[f"{arm}_loss"] < math.inf for arm in ("teacher", "student", "baseline"))
    assert "plain text has no score" in (run / "report" / "report.md").read_text()
