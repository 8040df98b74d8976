"""Autoscaling, shown on real Ray processes: Ray's fake multi-node provider (the one Ray's own
autoscaler tests use) with cluster.yaml's head and CPU node types, workers from zero. A stage that
needs CPUs makes the autoscaler launch a worker node, runs there (the head has no CPUs for work),
and the node is removed after the idle timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import DEMO, REPO, forget_head, free_port

pytestmark = pytest.mark.slow

CLUSTER = REPO / "cluster.yaml"
DATA_TYPE = "cpu-data"  # cluster.yaml's CPU node type for Ray Data
IDLE_TIMEOUT_MINUTES = 0.1  # cluster.yaml says 10; the test cannot wait that long

WATCH = """
import json, sys, time
import ray
ray.init(log_to_driver=False)
start, seen, deadline = time.time(), {}, time.time() + float(sys.argv[1])
while time.time() < deadline:
    for node in ray.nodes():
        worker = node["NodeID"] in seen or (node["Alive"] and node["Resources"].get("CPU", 0) > 0)  # head: 0 CPUs
        state = "up" if node["Alive"] else "down"
        if worker and seen.get(node["NodeID"]) != state:
            seen[node["NodeID"]] = state
            print("EVENT", json.dumps({"node": node["NodeID"], "state": state, "t": time.time(),
                              "labels": node.get("Labels", {})}), flush=True)
    if seen and all(s == "down" for s in seen.values()):
        break
    time.sleep(0.5)
"""


def fake_cluster(gcs_port: int) -> dict:
    """cluster.yaml's head and Ray Data node types on the fake provider: same resources for the head
    (no CPUs for work), the data type's labels and min_workers, its CPUs cut to this machine's 2."""
    real = yaml.safe_load(CLUSTER.read_text())
    types = real["available_node_types"]
    head, data = types[real["head_node_type"]], types[DATA_TYPE]
    empty = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
             "head_start_ray_commands", "worker_start_ray_commands", "cluster_synced_files", "rsync_exclude",
             "rsync_filter")
    return {
        "cluster_name": "raykd-fake", "max_workers": 1, "upscaling_speed": real["upscaling_speed"],
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES, "head_node_type": real["head_node_type"],
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{gcs_port}"},
        "available_node_types": {
            real["head_node_type"]: {"resources": head["resources"], "node_config": {}, "max_workers": 0},
            DATA_TYPE: {"resources": {"CPU": 2, "object_store_memory": 400_000_000}, "labels": data["labels"],
                        "node_config": {}, "min_workers": data["min_workers"], "max_workers": 1},
        },
        "auth": {}, "docker": {}, "file_mounts": {}, "file_mounts_sync_continuously": False,
        **{key: [] for key in empty},
    }


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the head's process group: the fake nodes live in it too."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


def left_in_group(pgid: int, wait_s: float = 30) -> list[int]:
    """Processes still in the group after ``wait_s`` (killed ones take a moment to be reaped)."""
    deadline = time.time() + wait_s
    while True:
        pids = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except ProcessLookupError:
                pass
        if not pids or time.time() > deadline:
            return pids
        time.sleep(1)


def test_a_stage_scales_a_cpu_node_up_from_zero_and_the_idle_node_goes(tmp_path):
    subprocess.run(["ray", "get-auth-token", "--generate"], check=True, capture_output=True)
    port = free_port()
    config = tmp_path / "autoscaling.yaml"
    config.write_text(yaml.safe_dump(fake_cluster(port)))
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "head.log"
    head = subprocess.Popen(["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=0", "--object-store-memory=300000000", "--include-dashboard=false",
                             "--disable-usage-stats", f"--autoscaling-config={config}"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    driver_env = dict(env, RAY_ADDRESS=f"127.0.0.1:{port}")
    try:
        deadline = time.time() + 120
        while subprocess.run(["ray", "status", f"--address=127.0.0.1:{port}"], capture_output=True,
                             env=driver_env).returncode:
            assert time.time() < deadline and head.poll() is None, log.read_text()[-3000:]
            time.sleep(2)
        watch = subprocess.Popen([sys.executable, "-c", WATCH, "400"], cwd=REPO, env=driver_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        submitted = time.time()
        stage = subprocess.run([sys.executable, "-m", "raykd.cli", "finetune", "--config", str(DEMO),
                                f"run_dir={tmp_path / 'run'}", "finetune.steps=2", "data.eval_examples=8"],
                               cwd=REPO, env=driver_env, capture_output=True, text=True, timeout=600)
        finished = time.time()
        assert stage.returncode == 0, stage.stdout[-2000:] + stage.stderr[-3000:]
        events = [json.loads(line.split(" ", 1)[1]) for line in watch.communicate(timeout=300)[0].splitlines()
                  if line.startswith("EVENT ")]
    finally:
        stop_group(head)
        forget_head(port)
    assert not left_in_group(head.pid)
    ups = [e for e in events if e["state"] == "up"]
    downs = [e for e in events if e["state"] == "down"]
    assert len(ups) == 1 and len(downs) == 1, events  # one node launched for the stage, then removed
    assert ups[0]["labels"].get("raykd.io/host-memory-gib") == "128"  # cluster.yaml's data node type
    assert submitted < ups[0]["t"] < finished < downs[0]["t"]
    assert "[finetune] step 2/2" in stage.stdout  # ran on that node: the head has no CPUs for work
    print(f"\nautoscaling timeline: scale-up {ups[0]['t'] - submitted:.1f}s after the stage started, stage "
          f"{finished - submitted:.1f}s, scale-down {downs[0]['t'] - finished:.1f}s after it ended "
          f"(idle timeout {IDLE_TIMEOUT_MINUTES * 60:.0f}s)")
