"""`raykd serve` started as a user starts it: a subprocess with its own local Ray, stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import DEMO, REPO, free_port


def start_serve(run: Path, overrides: list[str], env: dict | None = None, timeout: float = 240,
                config: Path = DEMO) -> tuple[subprocess.Popen, str]:
    """``raykd serve --config CONFIG run_dir=RUN OVERRIDES`` on a free port, logging to RUN/serve.log;
    returns (its process, its URL) once it says it is up. Its own process group, for a clean kill."""
    port = free_port()
    args = ["serve", "--config", str(config), f"run_dir={run}", f"serve.port={port}", *overrides]
    log = run / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "raykd.cli", *args], cwd=REPO, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})), start_new_session=True)
    deadline = time.time() + timeout
    while "OpenAI-compatible API at" not in log.read_text():
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(log.read_text()[-3000:])
        time.sleep(1)
    return proc, f"http://127.0.0.1:{port}"


def stop_serve(proc: subprocess.Popen, timeout: float = 90) -> int:
    """Ctrl-C (SIGINT), as a user stops it; its exit code. Killed with its Ray if it does not stop in time."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
