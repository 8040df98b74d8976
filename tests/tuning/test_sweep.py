"""`raykd tune` end to end on a real `ray start` cluster: ASHA stops a degenerate trial, no teacher
forward pass, and a sweep whose driver is SIGKILLed after its first finished trial resumes.

The kill comes when the third trial starts (trials run one at a time): by then ASHA has judged the
degenerate second trial. After a restore, ASHA's rung records start empty (seen with Ray 2.60), so
stopping is only asserted for trials judged before the kill."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from raykd.config import load_config
from tests.conftest import DEMO, REPO, metric_steps, mlflow_runs, raykd, read_metrics, tensorboard_steps

pytestmark = pytest.mark.slow

# Sequential trials make the run order (and so ASHA's comparisons) deterministic; lr up to 20 is a
# clearly bad region. The first trial is the config's own (sane) lr; with seed 0 a later one samples a
# degenerate one.
# Ranked by held-out KL to the teacher (the cache's held-out rows; no teacher runs): the degenerate lr
# is clearly worst at the first rung, where a task score can tie.
SWEEP = ["tune.metric=kl", "tune.num_samples=4", "tune.steps=40", "tune.eval_every=10", "tune.grace_period=10",
         "tune.max_concurrent_trials=1", "tune.lr=[1e-3, 20.0]"]


def finished_trials(experiment) -> list[str]:
    """Trials whose result.json holds their last step."""
    done = []
    for result in experiment.glob("trial_*/result.json"):
        lines = result.read_text().splitlines()
        if lines and json.loads(lines[-1]).get("step") == 40:
            done.append(result.parent.name)
    return done


def test_sweep_stops_bad_trials_never_runs_the_teacher_and_resumes_after_a_killed_driver(
        teacher_run, on_ray_head, tmp_path, mlflow_server):
    run, overrides = teacher_run
    copy = tmp_path / "run"
    for stage in ("teacher", "teacher_cache"):
        shutil.copytree(run / stage, copy / stage)
    args = ["tune", "--config", str(DEMO), *overrides, f"run_dir={copy}", *SWEEP,
            "tracking.backends=[tensorboard,mlflow]", f"tracking.mlflow_uri={mlflow_server}",
            "tracking.experiment=sweep"]
    driver = subprocess.Popen([sys.executable, "-m", "raykd.cli", *args], cwd=REPO, start_new_session=True,
                              stdout=open(tmp_path / "first.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    # killed as the last trial starts: the degenerate one (the third) has met ASHA by then, whose rung
    # records a restored sweep starts without
    while not list((copy / "tune").glob("sweep-*/trial_*_00003_*")):
        assert driver.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    [experiment] = (copy / "tune").glob("sweep-*")  # named by the sweep's inputs; the re-run finds it again
    first_done = finished_trials(experiment)
    lines_before = {t: len((experiment / t / "result.json").read_text().splitlines()) for t in first_done}
    assert not (copy / "tune" / "metrics.json").exists()  # the sweep really was cut short

    resumed = raykd(*args)
    assert "resuming the sweep" in resumed.stdout
    frame = pd.read_csv(copy / "tune" / "results.csv")
    assert len(frame) == 4 and frame["trial_id"].is_unique
    assert {"temperature", "alpha", "lr", "eval_loss", "eval_kl", "stopped_early"} <= set(frame.columns)
    for trial, count in lines_before.items():  # finished before the kill: not run again
        assert len((experiment / trial / "result.json").read_text().splitlines()) == count
    metrics = read_metrics(copy, "tune")
    assert metrics["trials"] == 4 and metrics["teacher_forward_passes"] == 0 and metrics["metric"] == "eval_kl"
    assert metrics["data_sources"] == ["object_store"]
    assert metrics["stopped_early"] >= 1
    # the config's own knobs ran as one of the trials, and the headline answers "did tuning beat it?"
    own = frame.set_index("trial_id").loc[metrics["config_trial"]]
    assert (own["temperature"], own["alpha"], own["lr"]) == (2.0, 0.5, load_config(DEMO).distill.lr)
    assert isinstance(metrics["sweep_beat_config"], bool) and metrics["compared_at_step"] >= 10
    assert ("beats your config" if metrics["sweep_beat_config"] else "found nothing better") in resumed.stdout
    worst = frame.sort_values("lr").iloc[-1]
    assert worst["lr"] > 1 and worst["stopped_early"], frame.to_string()  # the degenerate lr was stopped
    best = load_config(metrics["best_config"])
    assert best.distill.temperature == metrics["best_temperature"] and best.distill.steps == 60
    assert (copy / "tune" / "sweep.png").stat().st_size > 0 and (copy / "tune" / "results.parquet").exists()
    # the tracker: the sweep's run, and each trial's run under it, every reported step once
    runs = mlflow_runs(mlflow_server, "sweep")
    sweep = runs.pop(experiment.name)
    assert sweep.info.status == "FINISHED" and sweep.data.metrics["trials"] == 4
    assert {f"trial-{t}" for t in frame["trial_id"]} == set(runs)
    for name, trial in runs.items():
        assert trial.data.tags["mlflow.parentRunId"] == sweep.info.run_id and trial.info.status == "FINISHED"
        steps = metric_steps(mlflow_server, trial, "eval_kl")
        assert steps == sorted(set(steps)) and steps[0] == 10, (name, steps)
        assert float(trial.data.params["distill.temperature"]) == pytest.approx(
            frame.set_index("trial_id").loc[name.removeprefix("trial-"), "temperature"])
        assert tensorboard_steps(copy / "tune" / "tensorboard" / experiment.name / name, "eval_kl") == steps


def test_a_sweep_of_two_worker_trials_finishes_on_two_cpus(teacher_run, on_ray_head, tmp_path):
    """tune.workers_per_trial=2: each trial is a 2-worker FSDP2 TorchTrainer inside the Tune trial, its
    rank-0 reports reaching Tune and ASHA (which may stop the second trial, ending its TorchTrainer)
    (the shared 2-CPU head: one trial at a time, 0.5 CPU per worker).

    On the head, not a local cluster of its own: with two Ray clusters on one machine, Train V2's
    PlacementGroupCleaner (which frees a finished trial's placement group once its controller is gone)
    fails with "Found multiple active Ray instances", and the next trial waits for CPUs forever (seen)."""
    run, overrides = teacher_run
    copy = tmp_path / "run"
    for stage in ("teacher", "teacher_cache"):
        shutil.copytree(run / stage, copy / stage)
    raykd("tune", "--config", str(DEMO), *overrides, f"run_dir={copy}", "tune.workers_per_trial=2",
          "tune.cpus_per_trial=1", "distill.sharding=fsdp", "tune.metric=ce", "tune.num_samples=2", "tune.steps=6",
          "tune.eval_every=3", "tune.grace_period=3", "tune.max_concurrent_trials=1")
    metrics = read_metrics(copy, "tune")
    assert metrics["trials"] == 2 and metrics["teacher_forward_passes"] == 0
    frame = pd.read_csv(copy / "tune" / "results.csv")
    finished = frame["step"] == 6
    assert len(frame) == 2 and finished.any() and (finished | frame["stopped_early"]).all(), frame.to_string()
    assert len(list((copy / "checkpoints").glob("trial-*"))) == 2  # each trial's own TorchTrainer run
