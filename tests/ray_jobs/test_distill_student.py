"""The distillation job on a real cache: cached and online teacher sources, outputs, bad input."""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from raykd.training.checkpoints import TMP_PREFIX
from tests.conftest import DEMO, REPO, metric_steps, mlflow_runs, raykd, read_metrics, tensorboard_steps
from tests.ray_jobs.train_faults import attempts, registered, run_storage, train_worker_pids, wait_for

pytestmark = pytest.mark.slow


def test_distill_from_cache_writes_a_student_that_learned_the_task(student_run):
    run, _ = student_run
    metrics = read_metrics(run, "student")
    assert metrics["steps"] == 60 and metrics["teacher_source"] == "cache" and metrics["teacher_forward_passes"] == 0
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    # Eval asks about made-up words only the teacher's base has read of: a student trained on the labels
    # alone scores ~0 there (the report's baseline), so any score is knowledge taken from the teacher.
    assert metrics["eval_score"] > 0.1, metrics
    model = AutoModelForCausalLM.from_pretrained(run / "student")
    assert model.num_parameters() == metrics["params"]


def test_online_teacher_source_trains_the_same_way(teacher_run, head_env):
    run, overrides = teacher_run
    raykd("distill", "--config", str(DEMO), *overrides, "distill.teacher_source=online", "distill.steps=10",
          "distill.output=student_online", "distill.run_name=online", "data.eval_examples=16", env=head_env)
    metrics = read_metrics(run, "student_online")
    assert metrics["teacher_source"] == "online" and metrics["steps"] == 10
    assert metrics["teacher_forward_passes"] == 10  # one per micro-batch, counted


def test_on_policy_batches_are_the_students_samples_scored_by_the_teacher_pool(teacher_run, head_env):
    run, overrides = teacher_run
    raykd("distill", "--config", str(DEMO), *overrides, "distill.on_policy_fraction=0.5", "distill.steps=8",
          "distill.on_policy.max_new_tokens=8", "distill.loss=jsd", "distill.output=student_on_policy",
          "distill.run_name=on_policy", "data.eval_examples=16", env=head_env)
    metrics = read_metrics(run, "student_on_policy")
    assert metrics["steps"] == 8 and metrics["on_policy_batches"] == 4  # every other micro-batch
    assert metrics["teacher_forward_passes"] == 4  # the pool scored each on-policy batch once, none other
    assert 4 <= metrics["generated_tokens"] <= 4 * 32 * 8  # the student's samples, counted
    assert metrics["loss"] == "jsd" and metrics["on_policy_fraction"] == 0.5
    tokenizer = AutoTokenizer.from_pretrained(run / "student_on_policy")
    model = AutoModelForCausalLM.from_pretrained(run / "student_on_policy")
    ids = tokenizer("question: what is", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]


@pytest.mark.parametrize("override, message", [
    ("distill.teacher_source=none", "'distill.alpha' = 0.5 needs a teacher"),
    ("distill.on_policy_fraction=0.5 distill.sharding=fsdp distill.workers=2", "on_policy_fraction"),
    ("models.student=tiny:nope", "unknown model preset"),
])
def test_bad_distill_settings_fail_clearly(teacher_run, head_env, override, message):
    _, overrides = teacher_run
    proc = raykd("distill", "--config", str(DEMO), *overrides, *override.split(), check=False, timeout=300,
                 env=head_env)
    assert proc.returncode != 0 and message in proc.stderr + proc.stdout


def test_a_rerun_resumes_only_with_the_same_inputs(teacher_run, head_env):
    """Same knobs: the finished run is resumed, nothing trains, the weights are bit-identical. New knobs:
    a run of its own, trained from step 0, other weights."""
    run, overrides = teacher_run
    args = ["distill", "--config", str(DEMO), *overrides, "distill.steps=10", "distill.output=rerun",
            "data.eval_examples=16"]  # the evaluation set is not an input of the run's fingerprint
    weights = run / "rerun" / "model.safetensors"
    raykd(*args, env=head_env)
    first = weights.read_bytes()
    again = raykd(*args, env=head_env)
    assert read_metrics(run, "rerun")["resumed_from_step"] == 10
    assert "resumed from checkpoint at step 10" in again.stdout
    assert weights.read_bytes() == first
    changed = raykd(*args, "distill.alpha=0.9", "distill.temperature=3", env=head_env)
    assert "training afresh" in changed.stdout and "alpha 0.9, T 3.0" in changed.stdout
    metrics = read_metrics(run, "rerun")
    assert metrics["resumed_from_step"] == 0 and metrics["steps"] == 10 and metrics["alpha"] == 0.9
    assert weights.read_bytes() != first


def kill_during_checkpoint_write(run: Path, prefix: str, worker: int) -> tuple[str, list[str], int, int]:
    """SIGKILL ``worker`` in the middle of a checkpoint write: on the first checkpoint directory in the
    run's storage that the controller has not registered (being copied, or copied and not yet
    registered), freeze the worker (SIGSTOP) to list what the directory holds, then kill it.
    Returns (its name, its files with their sizes, the registered step then, how many checkpoints were kept)."""
    storage = wait_for(lambda: run_storage(run, prefix), 120, "the run's storage")
    seen = set(os.listdir(storage))
    deadline = time.time() + 300
    while time.time() < deadline:
        new = [n for n in os.listdir(storage) if n.startswith("checkpoint_") and n not in seen]
        if new:
            os.kill(worker, signal.SIGSTOP)
            step, kept = registered(run, prefix)
            if new[0] not in kept:
                files = sorted(f"{p.name} {p.stat().st_size} B" for p in (storage / new[0]).iterdir())
                os.kill(worker, signal.SIGKILL)
                return new[0], files, step, len(kept)
            os.kill(worker, signal.SIGCONT)  # registered before we looked: wait for the next one
            seen.add(new[0])
        time.sleep(0.002)
    raise AssertionError("no checkpoint write seen")


def test_distill_workers_killed_mid_epoch_and_mid_checkpoint_write_lose_only_steps_since_a_whole_checkpoint(
        tmp_path, teacher_run, mlflow_server):
    """A distillation worker SIGKILLed between checkpoints, then its successor SIGKILLed while a
    checkpoint is being copied to storage. Each restart resumes from the last checkpoint the controller
    registered (never the half-copied one), no step before it is trained again, and the run ends at
    exactly the configured step; the half-written checkpoint is deleted at the end. The step log (rank
    0, every step) gives the steps lost. The run's curve is in TensorBoard and in a real MLflow server,
    one run, every step once."""
    run, overrides = teacher_run
    args = ["distill", "--config", str(DEMO), *overrides, "distill.steps=40", "distill.checkpoint_every=5",
            "distill.log_every=1", "distill.max_failures=3", "distill.run_name=faults", "distill.output=student_faults",
            "data.eval_examples=16", "tracking.backends=[tensorboard,mlflow]", f"tracking.mlflow_uri={mlflow_server}",
            "tracking.experiment=faults", "tracking.log_models=true"]
    log, driver_log = tmp_path / "distill.log", run / "logs" / "distill.log"  # the terminal's lines; everything
    before = driver_log.stat().st_size if driver_log.exists() else 0  # the shared run's earlier distil runs
    env = dict(os.environ, RAY_DEDUP_LOGS="0")  # each attempt's "resumed" line, even when the same
    proc = subprocess.Popen([sys.executable, "-m", "raykd.cli", *args], cwd=REPO, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        wait_for(lambda: registered(run, "faults"), 600, "a registered checkpoint")
        first = wait_for(lambda: train_worker_pids(proc.pid), 60, "a train worker")[0]
        os.kill(first, signal.SIGKILL)  # mid-epoch: between two checkpoints
        second = wait_for(lambda: [p for p in train_worker_pids(proc.pid) if p != first], 120, "a new worker")[0]
        stray, files, step_at_kill, kept = kill_during_checkpoint_write(run, "faults", second)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may have exited whole already
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    tried = attempts(driver_log.read_bytes()[before:].decode(errors="replace"), "distill")
    print(f"attempts (resumed from, steps trained): {tried}; half-written checkpoint held {files} at the kill")
    assert len(tried) == 3, tried
    for resumed, trained in tried:
        assert trained == list(range(resumed + 1, resumed + 1 + len(trained))), tried  # no step trained twice
        assert resumed % 5 == 0
    (_, one), (resumed_two, two), (resumed_three, three) = tried
    assert one[-1] >= resumed_two >= 5 and two[-1] >= resumed_three  # never past what had been trained
    assert resumed_three == step_at_kill  # the checkpoint being copied was not the one resumed
    assert three[-1] == 40
    lost = one[-1] - resumed_two + two[-1] - resumed_three
    print(f"steps lost to the two kills: {lost}; registered checkpoints at the write kill: {kept}")
    metrics = read_metrics(run, "student_faults")
    assert metrics["steps"] == 40 and metrics["resumed_from_step"] == resumed_three
    # the half-written directory (and any other never registered) is gone; the registered ones stay
    left = {d.name for d in run_storage(run, "faults").glob("checkpoint_*") if d.is_dir()}
    assert stray not in left and left == registered(run, "faults")[1]
    # and the killed workers' local copies of their shards were deleted by the next checkpoint's writer
    assert not [p for pid in (first, second) for p in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}{pid}-*")]
    name = run_storage(run, "faults").name
    assert tensorboard_steps(run / "student_faults" / "tensorboard" / name, "train/loss") == list(range(1, 41))
    [tracked] = mlflow_runs(mlflow_server, "faults").values()  # three attempts, one run
    assert tracked.info.run_name == name and tracked.info.status == "FINISHED"
    assert metric_steps(mlflow_server, tracked, "train/loss") == list(range(1, 41))
    assert metric_steps(mlflow_server, tracked, "eval_score") == [40]
    assert tracked.data.params["distill.steps"] == "40" and tracked.data.tags["raykd.stage"] == "distill"
    artifacts = {a.path for a in MlflowClient(mlflow_server).list_artifacts(tracked.info.run_id, "model")}
    assert "model/config.json" in artifacts and "model/model.safetensors" in artifacts
