"""A Serve replica SIGKILLed under a steady request stream: what fails, and how soon the arm is whole."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import psutil

from tests.serving.servers import start_serve, stop_serve

CLIENTS = 4  # concurrent clients, each sending its next request as soon as the last is answered


def replica_pids(server_pid: int, arm: str) -> list[int]:
    """Live replica processes of ``arm`` (Ray titles them ``ray::ServeReplica:<app>:<arm>``)."""
    pids = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            title = " ".join(child.cmdline())
            if "ServeReplica" in title and title.split(":")[-1].strip() == arm and child.status() != "zombie":
                pids.append(child.pid)
        except psutil.Error:
            continue
    return pids


def running(url: str, arm: str) -> int:
    return httpx.get(f"{url}/healthz", timeout=10).json()["replicas"].get(arm, {}).get("RUNNING", 0)


async def stream_and_kill(url: str, server_pid: int) -> dict:
    """CLIENTS loops of teacher requests; 5 s in, one of the teacher's 2 replicas is SIGKILLed; the stream
    goes on until the arm has 2 running replicas again (neither the killed one) and 5 s more."""
    body = {"model": "teacher", "prompt": "question: what are fox and red?\nanswer:", "max_tokens": 8,
            "temperature": 0}
    results: list[tuple[float, float, int]] = []  # (sent, answered, status; 0 = no HTTP answer)
    stop = asyncio.Event()

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status = (await http.post("/v1/completions", json=body)).status_code
            except httpx.HTTPError:
                status = 0
            results.append((sent, time.monotonic(), status))

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        clients = [asyncio.create_task(client(http)) for _ in range(CLIENTS)]
        await asyncio.sleep(5)
        victim = replica_pids(server_pid, "teacher")[0]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        while True:
            pids = replica_pids(server_pid, "teacher")
            if len(pids) == 2 and victim not in pids and await asyncio.to_thread(running, url, "teacher") == 2:
                break
            assert time.monotonic() - killed < 180, "the arm did not get its second replica back"
            await asyncio.sleep(0.5)
        recovered = time.monotonic()
        await asyncio.sleep(5)
        stop.set()
        await asyncio.gather(*clients)
    return {"killed": killed, "recovered": recovered, "results": results}


def test_a_replica_sigkilled_under_load_fails_only_requests_in_flight_and_the_arm_recovers(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    proc, url = start_serve(run, ["serve.teacher_model=builtin:student", "serve.student_model=builtin:student",
                                  "serve.min_replicas=2", "serve.max_replicas=2", "serve.cpus_per_replica=0.4"])
    try:
        assert httpx.get(f"{url}/healthz").json()["replicas"] == {"teacher": {"RUNNING": 2},
                                                                   "student": {"RUNNING": 2}}
        seen = asyncio.run(stream_and_kill(url, proc.pid))
    finally:
        code = stop_serve(proc)
    killed, recovered, results = seen["killed"], seen["recovered"], seen["results"]
    failed = [(sent - killed, done - killed, status) for sent, done, status in results if status != 200]
    after = [status for sent, _, status in results if sent > recovered]
    figures = {"requests": len(results), "failed": len(failed), "failed_statuses": sorted({s for *_, s in failed}),
               "seconds_to_two_replicas": round(recovered - killed, 1), "answered_after_recovery": len(after)}
    (run / "replica_kill.json").write_text(json.dumps(figures) + "\n")
    print(f"replica SIGKILL: {figures}; failed (sent, answered, status) relative to the kill: {failed}")
    assert code == 0
    assert len(failed) <= CLIENTS and all(sent < 0.5 for sent, _, _ in failed), failed  # only those in flight
    assert after and set(after) == {200}
