import pytest

from raykd.config import ConfigError, load_config
from tests.conftest import DEMO, raykd_here


def test_demo_config_loads_with_absolute_run_dir():
    cfg = load_config(DEMO)
    assert cfg.run_dir.startswith("/")
    assert cfg.finetune.method == "lora" and cfg.finetune.lora_target_modules == ["all-linear"]


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg.distill.alpha == 0.5 and cfg.distill.temperature == 2.0


def test_override_sets_nested_typed_value():
    cfg = load_config(DEMO, ["finetune.workers=2", "finetune.sharding=ddp", "finetune.lr=1e-4",
                             "finetune.lora_target_modules=[q_proj]"])
    assert cfg.finetune.workers == 2 and cfg.finetune.lr == pytest.approx(1e-4)
    assert cfg.finetune.lora_target_modules == ["q_proj"]


@pytest.mark.parametrize("override, words", [
    ("distill.alpha=1.5", ["distill.alpha", "<= 1"]),
    ("distill.alpha=-0.1", ["distill.alpha", ">= 0"]),
    ("distill.temperature=0", ["distill.temperature", "> 0"]),
    ("finetune.workers=0", ["finetune.workers", ">= 1"]),
    ("finetune.lora_r=0", ["finetune.lora_r"]),
    ("finetune.lr=0", ["finetune.lr"]),
    ("finetune.sharding=zero3", ["finetune.sharding", "fsdp"]),
    ("finetune.workers=two", ["finetune.workers", "int"]),
    ("finetune.workers=1.5", ["finetune.workers", "int"]),
    ("finetune.no_such_knob=1", ["unknown key 'finetune.no_such_knob'", "did you mean"]),
    ("finetun.workers=1", ["unknown key 'finetun'", "'finetune'"]),
    ("finetune=3", ["'finetune' must be a mapping"]),
])
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_duplicate_key_is_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("finetune:\n  steps: 3\n  steps: 4\n")
    with pytest.raises(ConfigError, match="duplicate key 'steps'"):
        load_config(path)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


@pytest.mark.parametrize("override", ["distill.alpha=1.5", "finetune.no_such_knob=1"])
def test_cli_exits_2_with_one_line(capsys, override):
    proc = raykd_here(capsys, "finetune", "--config", str(DEMO), override)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and override.split("=")[0] in lines[0]


def test_shipped_configs_load():
    for name in ("demo", "classification", "llama70b_to_8b"):
        cfg = load_config(DEMO.parent / f"{name}.yaml")
        assert cfg.run_dir.startswith("/")


@pytest.mark.parametrize("overrides, message", [
    (["serve.min_replicas=3", "serve.max_replicas=2"], "serve.min_replicas"),
    (["serve.student_name=teacher"], "must differ"),
    (["serve.compare_concurrency=[]"], "serve.compare_concurrency"),
    (["serve.student_weight=1.2"], "serve.student_weight"),
    (["serve.arms=[]"], "serve.arms"),
    (["serve.arms=[student, student]"], "once each"),
    (["serve.arms=[draft]"], "give teacher, student or both"),
    (["serve.arms=[student]", "serve.shadow=true"], "serve.shadow' needs both arms"),
    (["serve.engine=tensorrt"], "serve.engine"),
    (["cache.tail_samples=2"], "cache.tail_samples"),
    (["distill.workers=2"], "distill.sharding=ddp or fsdp"),
    (["cache.vllm.tensor_parallel=4", "cache.gpus_per_actor=2"], "cache.vllm.tensor_parallel"),
    (["serve.teacher_vllm.gpu_memory_utilization=1.5"], "serve.teacher_vllm.gpu_memory_utilization"),
    (["evaluate.engine=tgi"], "evaluate.engine"),
    (["serve.student_vllm.max_model_lenn=64"], "did you mean 'serve.student_vllm.max_model_len'"),
])
def test_serve_and_distill_cross_checks_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, overrides)


@pytest.mark.parametrize("command", ["tune", "serve", "compare"])
def test_new_stages_exit_2_on_a_bad_key(capsys, command):
    proc = raykd_here(capsys, command, "--config", str(DEMO), "tune.no_such_knob=1")
    assert proc.returncode == 2 and "tune.no_such_knob" in proc.stderr
