"""The cache outlives the job that made it: a real `ray start --head` cluster, separate drivers."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import DEMO, REPO, raykd

READER = """
import hashlib, sys, ray
from pathlib import Path
from ray_jobs import teacher_cache
ray.init(namespace=teacher_cache.NAMESPACE)
cache = Path(sys.argv[1])
if sys.argv[2] == "kill":
    manifest = teacher_cache.CacheManifest.read(cache)
    ray.kill(ray.get_actor(teacher_cache.holder_name(cache, manifest), namespace=teacher_cache.NAMESPACE))
ds, manifest, source = teacher_cache.load(cache)
rows = sorted(hashlib.sha1(r["input_ids"].tobytes() + r["values"].tobytes() + r["lse"].tobytes()).hexdigest()
              for r in ds.iter_rows())
print("RESULT", source, len(rows), hashlib.sha1("".join(rows).encode()).hexdigest())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    """A real Ray head node for this test only, with token auth on, stopped by its own pid."""
    subprocess.run(["ray", "get-auth-token", "--generate"], check=True, capture_output=True)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # the head, `ray status` and every driver send the token
    port = free_port()
    proc = subprocess.Popen(["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while subprocess.run(["ray", "status", f"--address={address}"], capture_output=True).returncode != 0:
            assert time.time() < deadline and proc.poll() is None, (tmp_path / "head.log").read_text()[-2000:]
            time.sleep(2)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the head drains, then stops the processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def read_cache(address: str, cache_dir, mode: str) -> list[str]:
    env = dict(os.environ, RAY_ADDRESS=address)
    proc = subprocess.run([sys.executable, "-c", READER, str(cache_dir), mode], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return line.split()[1:]


def test_second_job_reads_object_store_then_parquet_after_actor_dies(teacher_run, ray_head, tmp_path, monkeypatch):
    run, overrides = teacher_run
    copy = tmp_path / "run"
    shutil.copytree(run / "teacher", copy / "teacher")
    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    raykd("cache", "--config", str(DEMO), *overrides, f"run_dir={copy}")  # its driver exits here
    source, rows, digest = read_cache(ray_head, copy / "teacher_cache", "read")
    assert source == "object_store" and int(rows) == 700
    fallback = read_cache(ray_head, copy / "teacher_cache", "kill")
    assert fallback == ["parquet", rows, digest]
