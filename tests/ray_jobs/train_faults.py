"""Helpers for fault tests of Ray Train stages: find the worker processes, read what the controller
registered, read the step log a run printed."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import psutil


def train_worker_pids(root_pid: int) -> list[int]:
    """Ray Train worker processes started under ``root_pid`` (Ray titles them ``ray::RayTrainWorker``)."""
    pids = []
    for child in psutil.Process(root_pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:
            continue
    return pids


def wait_for(predicate, timeout: float, what: str, every: float = 1.0):
    """``predicate()``'s first truthy value, polled every ``every`` seconds for at most ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def run_storage(run: Path, prefix: str) -> Path | None:
    """The Train run's storage directory ``RUN/checkpoints/<prefix>-<fingerprint>``, once it exists."""
    found = sorted((run / "checkpoints").glob(f"{prefix}-*"))
    return found[0] if found else None


def snapshot(run: Path, prefix: str) -> tuple[Path, dict] | None:
    """(storage directory, the controller's checkpoint snapshot): it writes the snapshot once it has
    registered a checkpoint (a checkpoint directory alone may not be registered)."""
    storage = run_storage(run, prefix)
    path = storage / "checkpoint_manager_snapshot.json" if storage else None
    return (storage, json.loads(path.read_text())) if path and path.exists() else None


def registered(run: Path, prefix: str) -> tuple[int, set[str]] | None:
    """(latest registered step, names of every kept registered checkpoint directory)."""
    found = snapshot(run, prefix)
    if found is None:
        return None
    state = found[1]
    return state["latest_checkpoint_result"]["metrics"]["step"], {r["checkpoint_dir_name"]
                                                                  for r in state["checkpoint_results"]}


def latest_checkpoint(run: Path, prefix: str = "finetune") -> tuple[int, Path] | None:
    """(step, directory) of the run's latest registered checkpoint."""
    found = snapshot(run, prefix)
    if found is None:
        return None
    latest = found[1]["latest_checkpoint_result"]
    return latest["metrics"]["step"], found[0] / latest["checkpoint_dir_name"]


def attempts(log: str, tag: str) -> list[tuple[int, list[int]]]:
    """The run's worker attempts in order, from a driver log of rank 0's lines (``log_every=1``):
    (step it resumed from, 0 for the first; the steps it trained, in order), one per worker pid.
    Ray may forward a worker's line twice (colour codes around its prefix): each step counts once per pid."""
    steps: dict[str, dict[int, None]] = {}
    resumed: dict[str, int] = {}
    for pid, what, step in re.findall(rf"RayTrainWorker pid=(\d+)[^)]*\)\S* \[{tag}\] "
                                      r"(step|resumed from checkpoint at step) (\d+)", log):
        if what == "step":
            steps.setdefault(pid, {})[int(step)] = None
        else:
            resumed[pid] = int(step)
    return [(resumed.get(pid, 0), list(trained)) for pid, trained in steps.items()]
