"""Where a server's CPU time goes: CPU seconds of process trees over a time window, summed by role
(vLLM's worker and engine core, Ray Serve's proxy and replicas, Ray's own processes, the server's main
process, the benchmark client). On a small machine every process shares the cores that run the model.
"""

from __future__ import annotations

import threading
import time

import psutil

# (substring of the command line, role), first match wins
ROLES = [("VLLM::Worker", "vllm worker"), ("VLLM::EngineCore", "vllm engine core"),
         ("ray::ProxyActor", "serve proxy"), ("ray::ServeReplica", "serve replica"),
         ("ray::", "ray system"), ("/ray/", "ray system")]  # GCS, raylet, dashboard, Serve's controller

Snapshot = dict[int, tuple[str, float]]  # pid → (role, CPU seconds so far)


def role(cmdline: str) -> str:
    """The role of a process below a tree's root, from its command line."""
    return next((name for part, name in ROLES if part in cmdline), "other")


def snapshot(roots: dict[int, str]) -> Snapshot:
    """Every process of the trees under ``roots`` (pid → the root's own role)."""
    out = {}
    for root_pid, root_role in roots.items():
        try:
            root = psutil.Process(root_pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:  # the root has exited
            continue
        for proc in tree:
            try:
                times = proc.cpu_times()
                name = root_role if proc.pid == root_pid else role(" ".join(proc.cmdline()))
                out[proc.pid] = (name, times.user + times.system)
            except psutil.Error:  # gone between the listing and the read
                continue
    return out


def by_role(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds per role between two snapshots (a process started in between counts from zero; one
    gone by ``after`` is not counted)."""
    totals: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        spent = seconds - before[pid][1] if pid in before else seconds
        totals[name] = totals.get(name, 0.0) + spent
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def cores_by_role(samples: list[tuple[float, Snapshot]], start: float, end: float) -> dict[str, float]:
    """Cores each role kept busy between the first sample at or after ``start`` and the last at or
    before ``end`` (times from ``time.monotonic``)."""
    inside = [(t, s) for t, s in samples if start <= t <= end]
    if len(inside) < 2:
        raise ValueError(f"fewer than 2 samples between {start:.1f} and {end:.1f}: sample more often")
    (t0, first), (t1, last) = inside[0], inside[-1]
    return {name: round(seconds / (t1 - t0), 3) for name, seconds in by_role(first, last).items()}


class Sampler(threading.Thread):
    """Snapshots of ``roots`` every ``interval_s`` until ``stop()``; ``samples`` is [(monotonic time, snapshot)]."""

    def __init__(self, roots: dict[int, str], interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.roots, self.interval_s = roots, interval_s
        self.samples: list[tuple[float, Snapshot]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.monotonic(), snapshot(self.roots)))
            self.done.wait(self.interval_s)

    def stop(self) -> list[tuple[float, Snapshot]]:
        self.done.set()
        self.join()
        return self.samples
