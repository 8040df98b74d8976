"""Stages as separate Ray jobs on a real cluster: fine-tune, cache and distil submitted through the
Jobs API of a `ray start --head` (dashboard on loopback, token auth on), the cache handed from the
cache job to the distil job through the object store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, read_metrics

pytestmark = pytest.mark.slow

SUBMIT = """
import json, sys, time
from ray.job_submission import JobStatus, JobSubmissionClient
url, entrypoint = sys.argv[1], sys.argv[2]
deadline = time.time() + 60
while True:  # the dashboard answers a little after the GCS
    try:
        client = JobSubmissionClient(url)
        break
    except Exception:
        if time.time() > deadline:
            raise
        time.sleep(2)
job = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": sys.argv[3]})
deadline = time.time() + 900
while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
    if time.time() > deadline:
        client.stop_job(job)
    time.sleep(2)
print("RESULT " + json.dumps({"id": job, "status": str(client.get_job_status(job)), "logs": client.get_job_logs(job)}))
"""

SMALL = ["finetune.steps=6", "finetune.checkpoint_every=3", "cache.include_unlabeled=false",
         "cache.include_eval=false", "distill.steps=6", "distill.checkpoint_every=3", "data.eval_examples=16"]


def submit(dashboard: str, stage_module: str, run_dir) -> str:
    """Submit ``python -m stage_module`` as a job (working dir: the repo), wait; its logs, or the test
    fails with them."""
    entrypoint = " ".join(["python", "-m", stage_module, "--config", "configs/demo.yaml", f"run_dir={run_dir}", *SMALL])
    env = dict(os.environ, RAY_AUTH_MODE="token")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", SUBMIT, dashboard, entrypoint, str(REPO)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, f"submitting {stage_module} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    job = json.loads(line[len("RESULT "):])
    assert job["status"] == "SUCCEEDED", (f"job {job['id']} ({stage_module}) {job['status']}; its logs:\n"
                                          f"{job['logs'][-5000:]}")
    return job["logs"]


def test_three_jobs_hand_the_cache_over_through_the_object_store(ray_head, tmp_path):
    run = tmp_path / "run"
    logs = submit(ray_head.dashboard, "ray_jobs.finetune_teacher", run)
    assert "[finetune] step 6/6" in logs and (run / "teacher" / "config.json").exists()
    logs = submit(ray_head.dashboard, "ray_jobs.cache_teacher_logits", run)
    assert "object store actor" in logs
    logs = submit(ray_head.dashboard, "ray_jobs.distill_student", run)
    assert "[distill] step 6/6" in logs
    distilled = read_metrics(run, "student")
    assert distilled["data_source"] == "object_store", distilled  # the cache job's blocks, not Parquet
    assert distilled["teacher_forward_passes"] == 0 and distilled["steps"] == 6
    # the cluster's Ray token is in no log of the head, the jobs or their workers, nor in any output
    token = (Path.home() / ".ray" / "auth_token").read_bytes().strip()
    files = [p for p in [*ray_head.session.rglob("*"), *run.rglob("*")] if p.is_file() and not p.is_symlink()]
    assert len(token) >= 16 and len(files) > 50
    assert not [p for p in files if token in p.read_bytes()]
