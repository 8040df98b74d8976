"""Shared fixtures: offline Hugging Face, a small local Ray, helpers to run stages as a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU local Ray for the module, always shut down."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def raykd(*args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``raykd ARGS`` in a fresh process (its own local Ray), as a user would."""
    cmd = [sys.executable, "-m", "ray_jobs.cli", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        tail = (proc.stdout[-3000:], proc.stderr[-3000:])
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{tail[0]}\n{tail[1]}")
    return proc


def read_metrics(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "metrics.json").read_text())
