"""cluster.yaml: valid for Ray's own launcher schema (offline), secure by default, and big enough for
every Ray ask of the production config (configs/llama70b_to_8b.yaml)."""

from __future__ import annotations

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from raykd.config import RaykdConfig, load_config
from tests.conftest import REPO

CLUSTER = REPO / "cluster.yaml"
PRODUCTION = REPO / "configs" / "llama70b_to_8b.yaml"
NEVER_EXPOSED = (6379, 8265, 10001)  # GCS, dashboard / jobs API, Ray client server


def raw() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def prepared() -> dict:
    """The file as `ray up` sees it: merged with the AWS defaults, then validated against ray-schema.json.
    Both run offline (checked: no cloud call before `ray up` launches anything)."""
    config = prepare_config(raw())
    validate_config(config)
    return config


def workers(config: dict) -> dict[str, dict]:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def test_ray_schema_accepts_it():
    config = prepared()
    assert config["provider"]["type"] == "aws"
    for node_type in config["available_node_types"].values():
        assert all(isinstance(v, int) for v in node_type["resources"].values())  # the schema wants integers


def test_a_typo_fails_the_schema():  # the check above can fail: additionalProperties is false
    broken = raw()
    broken["available_node_types"]["cpu-data"]["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_head_runs_no_work_and_workers_scale_from_zero():
    config = prepared()
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert len(workers(config)) >= 3 and config["idle_timeout_minutes"] > 0 and config["upscaling_speed"] > 0
    for node_type in workers(config).values():
        assert node_type["min_workers"] == 0 and node_type["max_workers"] >= 1
    assert sum(t["max_workers"] for t in workers(config).values()) <= config["max_workers"]
    kinds = {bool(t["resources"].get("GPU")) for t in workers(config).values()}
    assert kinds == {True, False}  # GPU node types and CPU-only ones for Ray Data


def test_labels_are_valid_ray_node_labels():
    from ray._private.label_utils import validate_node_label_syntax

    for node_type in raw()["available_node_types"].values():
        validate_node_label_syntax(node_type.get("labels") or {})


def production_asks(cfg: RaykdConfig) -> dict[str, dict[str, float]]:
    """One ask of each kind the production config makes (each must land on a single node)."""
    s = cfg.serve
    return {
        "finetune worker": {"CPU": cfg.finetune.cpus_per_worker, "GPU": cfg.finetune.gpus_per_worker},
        "distill worker": {"CPU": cfg.distill.cpus_per_worker, "GPU": cfg.distill.gpus_per_worker},
        "cache actor": {"CPU": cfg.cache.cpus_per_actor, "GPU": cfg.cache.gpus_per_actor},
        "tune trial": {"CPU": cfg.tune.cpus_per_trial, "GPU": cfg.tune.gpus_per_trial},
        # a tensor-parallel replica's placement group is STRICT_PACK: its CPU bundle and GPUs on one node
        "teacher replica": {"CPU": s.cpus_per_replica, "GPU": max(s.gpus_per_replica, s.teacher_vllm.tensor_parallel)},
        "student replica": {"CPU": s.cpus_per_replica, "GPU": max(s.gpus_per_replica, s.student_vllm.tensor_parallel)},
    }


def test_every_production_ask_fits_some_worker_node_type():
    types = workers(prepared())
    for what, ask in production_asks(load_config(PRODUCTION)).items():
        assert ask["GPU"] > 0, what  # the production config runs every stage on GPUs
        fitting = [n for n, t in types.items()
                   if ask["CPU"] <= t["resources"].get("CPU", 0) and ask["GPU"] <= t["resources"].get("GPU", 0)]
        assert fitting, f"no worker node type holds a {what}: {ask}"


def test_gpu_node_types_hold_the_16_gpu_finetune():
    cfg = load_config(PRODUCTION)
    ft = cfg.finetune
    assert ft.workers * ft.gpus_per_worker == 16
    types = workers(prepared())
    gpus = sum(t["resources"].get("GPU", 0) * t["max_workers"] for t in types.values())
    assert gpus >= ft.workers * ft.gpus_per_worker
    eight = [t for t in types.values() if t["resources"].get("GPU") == 8]
    assert any(t["max_workers"] * 8 >= 16 and t["resources"]["CPU"] >= 8 * ft.cpus_per_worker for t in eight)


def test_no_ray_port_is_open_to_the_internet():
    rules = raw()["provider"]["security_group"]["IpPermissions"]
    for rule in rules:  # Ray itself adds only SSH (22) from anywhere and all traffic inside the group
        low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
        public = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))
        assert not public or low == high == 22, rule
        assert not any(low <= port <= high for port in NEVER_EXPOSED), rule
    text = CLUSTER.read_text()
    assert "ray dashboard cluster.yaml" in text and "ssh" in text and "-L 8265:localhost:8265" in text


def test_token_auth_is_on_everywhere():
    config = raw()
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = next(c for c in commands if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH=" in start
    assert "~/.ray/auth_token" in config["file_mounts"].values()


def test_setup_installs_the_project_and_mounts_the_run_dir():
    config = prepared()
    cfg = load_config(PRODUCTION)
    for name, node_type in workers(config).items():
        commands = " ".join(node_type.get("worker_setup_commands") or config["worker_setup_commands"])
        assert "torch==" in commands and "-e " in commands and "/mnt/shared" in commands, name
        assert ('raykd[vllm]' in commands) == bool(node_type["resources"].get("GPU")), name
    assert "raykd[vllm]" in " ".join(config["head_setup_commands"])  # drivers pick engines from their packages
    assert cfg.run_dir.startswith("/mnt/shared/")
