import math

import pytest

from raykd.config import ConfigError, load_config
from raykd.tracking.runs import TrackedRun, flat_params, numeric


def test_numbers_are_flattened_with_intervals_as_low_and_high():
    metrics = {"score": 0.5, "gain_ci": [0.25, 0.75], "ok": True, "engine": "vllm", "loss": math.inf, "steps": 3,
               "arms": {"student": {"score": 0.4, "score_ci": [0.3, 0.5]}}, "levels": [1, 4], "latencies": [1, 2]}
    assert numeric(metrics, "final/") == {
        "final/score": 0.5, "final/gain_ci_low": 0.25, "final/gain_ci_high": 0.75, "final/steps": 3.0,
        "final/loss": math.inf,
        "final/arms/student/score": 0.4, "final/arms/student/score_ci_low": 0.3,
        "final/arms/student/score_ci_high": 0.5}


def test_params_are_the_dotted_config_with_lists_as_json():
    params = flat_params(load_config(None, ["tracking.tags=[team=kd]"]).to_dict())
    assert params["distill.alpha"] == "0.5" and params["tracking.tags"] == '["team=kd"]'
    assert params["serve.teacher_vllm.dtype"] == "auto" and all(len(v) <= 500 for v in params.values())


def test_a_run_is_named_by_its_directory_name_and_parent():
    run = TrackedRun("distill", "distill-student-abc", "/runs/a", "/runs/a/student")
    assert run.key == TrackedRun("distill", "distill-student-abc", "/runs/a", "/elsewhere").key
    assert run.key != TrackedRun("distill", "distill-student-abc", "/runs/b", "/runs/b/student").key
    trial = TrackedRun("tune", "trial-1", "/runs/a", "/runs/a/tune", parent="sweep-x")
    assert trial.parent_key == TrackedRun("tune", "sweep-x", "/runs/a", "/runs/a/tune").key
    assert str(trial.tensorboard_dir) == "/runs/a/tune/tensorboard/sweep-x/trial-1"
    assert run.tags(["team=kd", "note=a=b"])["note"] == "a=b" and run.tags([])["raykd.stage"] == "distill"


@pytest.mark.parametrize("override, says", [
    ("tracking.backends=[tensorbord]", "['tensorbord'] not among"),
    ("tracking.tags=[nokey]", "must be key=value"),
    ("tracking.mlflow_uri=https://me:pw@mlflow.example.com", "holds credentials"),
    ("tracking.wandb_mode=sync", "'tracking.wandb_mode'"),
])
def test_bad_tracking_settings_are_one_line_naming_the_key(override, says):
    with pytest.raises(ConfigError, match="tracking") as error:
        load_config(None, [override])
    assert says in str(error.value) and "\n" not in str(error.value)
