"""bench/process_cpu.py: CPU time of process trees by role, over a window."""

import importlib.util
import os
import threading
import time

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("process_cpu", REPO / "bench" / "process_cpu.py")
process_cpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(process_cpu)


@pytest.mark.parametrize(("cmdline", "expected"), [
    ("VLLM::Worker", "vllm worker"), ("VLLM::EngineCore", "vllm engine core"),
    ("ray::ProxyActor.receive_asgi_messages", "serve proxy"),
    ("ray::ServeReplica:raykd:teacher.handle_request_with_rejection", "serve replica"),
    ("ray::ServeController", "ray system"),
    ("/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --port 6379", "ray system"),
    ("/venv/bin/python /repo/raykd/cli.py serve", "other")])
def test_roles_come_from_the_command_line(cmdline, expected):
    assert process_cpu.role(cmdline) == expected


def test_by_role_counts_what_each_process_spent_between_two_snapshots():
    before = {1: ("vllm worker", 10.0), 2: ("serve proxy", 3.0), 3: ("serve proxy", 1.0)}
    after = {1: ("vllm worker", 12.5), 2: ("serve proxy", 3.5), 4: ("serve proxy", 0.25)}  # 3 gone, 4 new
    assert process_cpu.by_role(before, after) == {"vllm worker": 2.5, "serve proxy": 0.75}


def test_cores_are_cpu_seconds_over_the_samples_inside_the_window():
    samples = [(0.0, {1: ("client", 0.0)}), (1.0, {1: ("client", 0.5)}), (3.0, {1: ("client", 2.5)}),
               (5.0, {1: ("client", 9.0)})]
    assert process_cpu.cores_by_role(samples, 0.5, 4.0) == {"client": 1.0}  # (2.5 - 0.5) / (3 - 1)
    with pytest.raises(ValueError, match="fewer than 2 samples"):
        process_cpu.cores_by_role(samples, 3.5, 4.5)


def test_a_sampled_busy_process_shows_about_one_core():
    def spin() -> None:
        end = time.monotonic() + 2
        while time.monotonic() < end:
            pass

    sampler = process_cpu.Sampler({os.getpid(): "server main"}, interval_s=0.2)
    sampler.start()
    busy = threading.Thread(target=spin)
    busy.start()
    busy.join()
    samples = sampler.stop()
    cores = process_cpu.cores_by_role(samples, samples[0][0], samples[-1][0])
    assert 0.3 < cores["server main"] < 1.5  # one busy thread on a shared machine: not exact
