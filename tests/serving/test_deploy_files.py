"""serving/serve_config.yaml is a valid `serve deploy` file whose builder builds; `serve build` works."""

import subprocess
from pathlib import Path

import pytest
import yaml
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from raykd.config import ConfigError
from serving import app
from tests.conftest import REPO

CONFIG = REPO / "serving" / "serve_config.yaml"


def test_serve_config_validates_and_its_builder_builds_the_app():
    config = yaml.safe_load(CONFIG.read_text())
    ServeDeploySchema.model_validate(config)
    spec = config["applications"][0]
    assert spec["import_path"] == "serving.app:build" and spec["route_prefix"] == "/"
    assert isinstance(app.build(spec["args"]), Application)


def test_missing_model_directory_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="serve.teacher_model"):
        app.build({"config": "configs/demo.yaml", "overrides": [f"run_dir={tmp_path}"]})


@pytest.mark.slow
def test_serve_build_writes_a_deployable_config(tmp_path):
    out = Path(tmp_path) / "built.yaml"
    subprocess.run(["serve", "build", "serving.app:app", "-o", str(out)], cwd=REPO, check=True, capture_output=True,
                   timeout=120)
    built = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(built)
    names = {d["name"] for d in built["applications"][0]["deployments"]}
    assert names == {"router", "teacher", "student"}


def test_arm_options_fit_the_config_and_tensor_parallel_arms_get_gpu_bundles():
    from raykd.config import load_config
    from serving.deployments import arm_options

    s = load_config(REPO / "configs" / "llama70b_to_8b.yaml").serve
    teacher, student = arm_options("teacher", s, "vllm"), arm_options("student", s, "vllm")
    assert teacher["placement_group_bundles"] == [{"CPU": 4.0}] + [{"GPU": 1}] * 4
    assert teacher["ray_actor_options"]["num_gpus"] == 0 and "placement_group_bundles" not in student
    assert (student["ray_actor_options"]["num_cpus"], student["ray_actor_options"]["num_gpus"]) == (4.0, 1.0)
    assert student["autoscaling_config"]["max_replicas"] == 4 and student["max_ongoing_requests"] == 64
    demo = load_config(REPO / "configs" / "demo.yaml").serve
    on_cpu = arm_options("student", demo, "transformers")["ray_actor_options"]
    assert (on_cpu["num_cpus"], on_cpu["num_gpus"]) == (0.5, 0.0)
    assert on_cpu["runtime_env"]["env_vars"]["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"
    assert "placement_group_bundles" not in arm_options("teacher", s, "transformers")  # TP is vLLM's


def test_an_arm_alone_is_the_ingress_with_its_options_and_room_above_its_models_queue():
    from ray.serve import Application

    from raykd.config import load_config
    from serving.deployments import INGRESS_HEADROOM, ArmSpec, alone_options, arm_options

    s = load_config(REPO / "configs" / "llama70b_to_8b.yaml").serve
    specs = {name: ArmSpec(f"/models/{name}", f"/models/{name}", "vllm", name, {}) for name in ("teacher", "student")}
    router, arms = app.ingress({"teacher": specs["teacher"]}, s, "vllm")
    assert router.name == "teacher" and arms == {"teacher": specs["teacher"]}  # the model loads in the ingress
    room = s.max_ongoing_requests + s.max_queued_requests + INGRESS_HEADROOM
    assert (router.max_ongoing_requests, router.max_queued_requests) == (room, room)
    assert router.ray_actor_options == arm_options("teacher", s, "vllm")["ray_actor_options"]
    alone = alone_options("teacher", s, "vllm")
    assert alone["placement_group_bundles"] == [{"CPU": 4.0}] + [{"GPU": 1}] * 4  # TP shards beside the ingress
    assert alone["autoscaling_config"] == arm_options("teacher", s, "vllm")["autoscaling_config"]
    router, arms = app.ingress(specs, s, "vllm")
    assert router.name == "router" and router.ray_actor_options["num_cpus"] == 0.1
    assert all(isinstance(arm, Application) for arm in arms.values()) and list(arms) == ["teacher", "student"]
