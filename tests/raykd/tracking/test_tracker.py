"""The tracker with each real backend: TensorBoard event files read back with TensorBoard's own reader,
an MLflow SQLite store read back with ``MlflowClient``, W&B offline files parsed; a resumed run logs no
point twice; a tracker that fails is one warning line."""

import os
import socket
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from raykd.config import ConfigError, TrackingConfig, load_config
from raykd.tracking import tracker as tracker_module
from raykd.tracking.backend_mlflow import tracking_uri
from raykd.tracking.backend_wandb import history
from raykd.tracking.runs import TrackedRun, flat_params
from raykd.tracking.tracker import Tracker, check_clients


@pytest.fixture(autouse=True)
def no_failed_backends():
    """Each test starts with no backend remembered as failed (``tracker.FAILED`` lasts a process)."""
    tracker_module.FAILED.clear()
    yield
    tracker_module.FAILED.clear()


def a_run(tmp_path, name="distill-student-abc", parent=None) -> TrackedRun:
    return TrackedRun("distill", name, str(tmp_path), str(tmp_path / "student"), parent)


def train_then_resume(settings: TrackingConfig, run: TrackedRun) -> None:
    """Steps 1-6 logged, then a 'resumed' process re-logs from step 4 (its checkpoint) to 10."""
    for first, last in ((1, 6), (4, 10)):
        tracker = Tracker(settings, run)
        tracker.log_params({"distill.alpha": "0.5", "distill.log_every": str(first)})  # a changed knob is kept
        for step in range(first, last + 1):
            tracker.log_metrics({"train/loss": 1.0 / step}, step)
        tracker.log_metrics({"eval_score": 0.5}, last)
        tracker.finish()


def test_tensorboard_holds_each_point_once_after_a_resume_and_the_report_files(tmp_path):
    run = a_run(tmp_path)
    train_then_resume(TrackingConfig(backends=["tensorboard"]), run)
    (tmp_path / "report.md").write_text("| arm | score |\n| --- | --- |\n| student | 0.5 |\n")
    plt.plot([0, 1]), plt.savefig(tmp_path / "report.png"), plt.close()
    tracker = Tracker(TrackingConfig(backends=["tensorboard"]), run)
    tracker.log_artifact(tmp_path / "report.md"), tracker.log_artifact(tmp_path / "report.png"), tracker.finish()
    events = EventAccumulator(str(run.tensorboard_dir)).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 11))
    assert [e.step for e in events.Scalars("eval_score")] == [6, 10]
    assert {"config/text_summary", "report.md/text_summary"} <= set(events.Tags()["tensors"])
    assert events.Tags()["images"] == ["report.png"]


def test_mlflow_holds_each_point_once_params_and_a_trial_under_its_sweep(tmp_path):
    settings = TrackingConfig(backends=["mlflow"], experiment="kd", tags=["team=kd"])
    run = a_run(tmp_path)
    train_then_resume(settings, run)
    trial = TrackedRun("tune", "trial-1", str(tmp_path), str(tmp_path / "tune"), parent="sweep-x")
    sweep = Tracker(settings, TrackedRun("tune", "sweep-x", str(tmp_path), str(tmp_path / "tune")))
    sweep.log_metrics({"best_score": 0.5}, 0)
    failed = Tracker(settings, trial)
    failed.log_metrics({"eval_loss": 2.0}, 10)
    failed.finish(failed=True)
    sweep.finish()
    client = MlflowClient(tracking_uri(settings.mlflow_uri, str(tmp_path)))
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("kd").experiment_id])}
    assert set(runs) == {"distill-student-abc", "sweep-x", "trial-1"}  # one run per name, resumed or not
    distilled = runs["distill-student-abc"]
    steps = [m.step for m in client.get_metric_history(distilled.info.run_id, "train/loss")]
    assert steps == list(range(1, 11)) and distilled.info.status == "FINISHED"
    assert distilled.data.params == {"distill.alpha": "0.5", "distill.log_every": "1"}
    assert distilled.data.tags["team"] == "kd" and distilled.data.tags["raykd.run_dir"] == str(tmp_path)
    assert runs["trial-1"].data.tags["mlflow.parentRunId"] == runs["sweep-x"].info.run_id
    assert runs["trial-1"].info.status == "FAILED"
    # artifacts go beside the run directory's store, not into ./mlruns of whichever process made the experiment
    (tmp_path / "report.md").write_text("| arm |\n")
    Tracker(settings, run).log_artifact(tmp_path / "report.md", "files")
    assert (tmp_path / "mlartifacts").is_dir() and not Path("mlruns").exists()
    assert [a.path for a in client.list_artifacts(distilled.info.run_id, "files")] == ["files/report.md"]


@pytest.mark.slow  # W&B's client starts its own service process
def test_wandb_offline_files_hold_each_point_once_after_a_resume(tmp_path):
    run = a_run(tmp_path)
    train_then_resume(TrackingConfig(backends=["wandb"], wandb_mode="offline"), run)
    files = sorted((tmp_path / "student" / "wandb" / "wandb").glob(f"offline-run-*-{run.key}/*.wandb"))
    rows = [row for path in files for row in history(path)]
    assert len(files) == 2  # one per process; `wandb sync` merges them into the run named by the key
    assert [r["raykd/step"] for r in rows if "train/loss" in r] == list(range(1, 11))
    assert [r["raykd/step"] for r in rows if "eval_score" in r] == [6, 10]


def test_an_unreachable_tracker_is_one_warning_for_the_process_and_the_others_go_on(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    settings = TrackingConfig(backends=["mlflow", "tensorboard"], mlflow_uri=f"http://127.0.0.1:{port}")
    run = a_run(tmp_path)
    tracker = Tracker(settings, run)
    tracker.log_params({"distill.alpha": "0.5"})
    tracker.close()  # the driver's tracker reopens after its workers trained; they skip the failed backend
    assert tracker.for_workers().settings.backends == ["tensorboard"]
    tracker.log_metrics({"train/loss": 1.0}, 1)
    tracker.finish()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raykd: warning: tracking: mlflow (http://127.0.0.1:"), err
    assert "goes on without it" in err[0]
    assert [e.step for e in EventAccumulator(str(run.tensorboard_dir)).Reload().Scalars("train/loss")] == [1]


def test_a_backend_whose_client_is_missing_is_refused_naming_the_extra(monkeypatch):
    monkeypatch.setitem(tracker_module.CLIENTS, "wandb", ("no_such_wandb_module", "wandb"))
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[wandb\]'"):
        check_clients(TrackingConfig(backends=["tensorboard", "wandb"]))
    check_clients(TrackingConfig(backends=["tensorboard"]))


@pytest.mark.slow  # W&B's client starts its own service process
def test_no_secret_from_the_environment_reaches_a_tracker(tmp_path, monkeypatch):
    """Credentials live in the environment only: a full config's params, logged to every local backend,
    hold none of them."""
    secrets = {"WANDB_API_KEY": "wandb-secret-4242", "MLFLOW_TRACKING_PASSWORD": "mlflow-secret-4242",
               "RAYKD_TEST_KEY": "api-secret-4242"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    cfg = load_config(None, [f"run_dir={tmp_path}", "serve.api_key_env=RAYKD_TEST_KEY",
                             "tracking.backends=[tensorboard,mlflow,wandb]", "tracking.wandb_mode=offline"])
    tracker = Tracker(cfg.tracking, a_run(tmp_path))
    tracker.log_params(flat_params(cfg.to_dict()))
    tracker.log_metrics({"train/loss": 1.0}, 1)
    tracker.finish()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 3
    for path in written:
        data = path.read_bytes()
        assert not any(value.encode() in data for value in secrets.values()), path
    assert os.environ["RAYKD_TEST_KEY"] == "api-secret-4242"
