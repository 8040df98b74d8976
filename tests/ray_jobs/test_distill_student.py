"""The distillation job on a real cache: cached and online teacher sources, outputs, bad input."""

import pytest
from transformers import AutoModelForCausalLM

from tests.conftest import DEMO, raykd, read_metrics


def test_distill_from_cache_writes_a_student_that_learned_the_task(teacher_run):
    run, overrides = teacher_run
    raykd("distill", "--config", str(DEMO), *overrides)
    metrics = read_metrics(run, "student")
    assert metrics["steps"] == 60 and metrics["teacher_source"] == "cache" and metrics["teacher_forward_passes"] == 0
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    assert metrics["eval_score"] > 0.5
    model = AutoModelForCausalLM.from_pretrained(run / "student")
    assert model.num_parameters() == metrics["params"]


def test_online_teacher_source_trains_the_same_way(teacher_run):
    run, overrides = teacher_run
    raykd("distill", "--config", str(DEMO), *overrides, "distill.teacher_source=online", "distill.steps=10",
          "distill.output=student_online", "distill.run_name=online")
    metrics = read_metrics(run, "student_online")
    assert metrics["teacher_source"] == "online" and metrics["steps"] == 10
    assert metrics["teacher_forward_passes"] == 10  # one per micro-batch, counted


@pytest.mark.parametrize("override, message", [
    ("distill.teacher_source=none", "'distill.alpha' = 0.5 needs a teacher"),
    ("models.student=tiny:nope", "unknown model preset"),
    ("distill.top_k=99", "holds only 16"),
])
def test_bad_distill_settings_fail_clearly(teacher_run, override, message):
    _, overrides = teacher_run
    proc = raykd("distill", "--config", str(DEMO), *overrides, override, check=False, timeout=300)
    assert proc.returncode != 0 and message in proc.stderr + proc.stdout
