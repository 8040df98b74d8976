"""``raykd plan``: parameter counts from meta models, memory formulas checked against measurements, the
production config on cluster.yaml, and the command's exit codes. No Ray cluster is started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raykd.config import FinetuneConfig, load_config
from raykd.losses import TAIL_TEMPERATURES
from raykd.models.load import add_lora, count_params, load_model
from raykd.plan.arch import architecture_config, lora_params, meta_model, model_shape
from raykd.plan.capacity import FUSED_LOSS_COPIES, GIB, block_activation_bytes, cache_bytes_per_row
from raykd.plan.cluster_spec import NodeType, place
from raykd.plan.data_rows import count_rows
from raykd.plan.planner import build_plan
from tests.conftest import DEMO, REPO, raykd_here

PRODUCTION = REPO / "configs" / "llama70b_to_8b.yaml"
CLUSTER = REPO / "cluster.yaml"


def run_plan(capsys, monkeypatch, *args: str) -> subprocess.CompletedProcess:
    """``raykd plan ARGS`` in this process, from the repository root (where it finds cluster.yaml)."""
    monkeypatch.chdir(REPO)
    return raykd_here(capsys, "plan", *args)


@pytest.mark.parametrize("hub_id, published", [
    ("meta-llama/Llama-2-7b-hf", 6.74e9), ("meta-llama/Llama-2-70b-hf", 68.98e9),
    ("meta-llama/Llama-3.1-8B", 8.03e9), ("meta-llama/Llama-3.1-70B-Instruct", 70.55e9),
])
def test_bundled_architectures_have_the_published_parameter_counts(hub_id, published):
    model = meta_model(architecture_config(hub_id), "causal_lm", 2)
    assert next(model.parameters()).device.type == "meta"
    assert abs(count_params(model) / published - 1) < 0.01


@pytest.fixture(scope="module")
def demo_plan() -> dict:
    return build_plan(load_config(DEMO), CLUSTER, 1000, None)


def test_builtin_models_are_counted_as_the_real_ones_load(demo_plan):
    cfg = load_config(DEMO)
    for role, spec in (("teacher", cfg.models.teacher), ("student", cfg.models.student)):
        assert demo_plan["models"][role]["params"] == count_params(load_model(spec, "causal_lm", 2))
    real = add_lora(load_model(cfg.models.teacher, "causal_lm", 2), cfg.finetune, "causal_lm")
    assert demo_plan["models"]["teacher"]["trainable"] == sum(p.numel() for p in real.parameters() if p.requires_grad)


@pytest.mark.parametrize("task", ["causal_lm", "sequence_classification"])
def test_lora_count_from_shapes_equals_peft(task):
    ft = FinetuneConfig(lora_r=8, lora_target_modules=["q_proj", "down_proj"])
    counted, _ = lora_params(meta_model(architecture_config("builtin:teacher"), task, 3), ft.lora_target_modules,
                             ft.lora_r, task)
    real = add_lora(load_model("builtin:teacher", task, 3), ft, task)
    assert counted == sum(p.numel() for p in real.parameters() if p.requires_grad)


def test_demo_plans_on_cpu_nodes_and_fits(demo_plan):
    assert demo_plan["fits"] and not demo_plan["problems"]
    assert all(not s["on_gpu"] for s in demo_plan["stages"])
    assert set(demo_plan["placements"]["finetune"]["nodes"]) == {"cpu-data"}  # never a GPU node for CPU work


@pytest.fixture(scope="module")
def production() -> dict:
    """The production plan with and without per-block activation checkpointing (the config's is on)."""
    knobs = {ac: [f"{s}.activation_checkpointing={str(ac).lower()}" for s in ("finetune", "distill")]
             for ac in (False, True)}
    return {ac: build_plan(load_config(PRODUCTION, knobs[ac]), CLUSTER, 1000, None) for ac in (False, True)}


def stage(plan: dict, name: str) -> dict:
    return next(s for s in plan["stages"] if s["stage"] == name)


def problems_of(plan: dict, name: str) -> list[str]:
    return [p for p in plan["problems"] if p.startswith(name + ":")]


def test_production_finetune_takes_two_8_gpu_nodes_and_fits_with_checkpointing(production):
    plan = production[True]
    assert plan["models"]["teacher"]["trainable"] == 80 * 16 * ((8192 + 8192) + (8192 + 1024))  # LoRA q+v, r=16
    assert plan["placements"]["finetune"] == {"nodes": {"gpu-train-p5": 2}, "asks": 16, "unplaced": 0}
    assert stage(plan, "finetune")["per_device_gib"] < 80
    assert not [p for p in problems_of(plan, "finetune") if "per GPU" in p]
    assert not problems_of(plan, "distill") and not problems_of(plan, "cache") and not problems_of(plan, "serve")


def test_production_finetune_without_checkpointing_is_flagged_and_only_ddp_loading_is(production):
    # Without activation checkpointing the 70B fine-tune is too big for an 80 GiB GPU. FSDP2 loads each
    # worker's shard only (raykd.models.sharded_load); DDP would load the whole fp32 model on every GPU.
    lines = problems_of(production[False], "finetune")
    assert any("GiB per GPU" in p for p in lines) and not any("loading" in p for p in lines)
    assert stage(production[False], "finetune")["per_device_gib"] > 80
    assert stage(production[True], "finetune")["load_gib"] < 20  # 280 GB over 16 workers
    ddp = build_plan(load_config(PRODUCTION, ["finetune.sharding=ddp"]), CLUSTER, 1000, None)
    assert any("loading puts" in p for p in problems_of(ddp, "finetune"))


def test_full_finetune_of_8b_per_trial_on_one_gpu_is_flagged(production):
    one_gpu = build_plan(load_config(PRODUCTION, ["tune.workers_per_trial=1", "tune.gpus_per_trial=1",
                                                  "tune.cpus_per_trial=8"]), CLUSTER, 1000, None)
    trial = stage(one_gpu, "tune")
    weights_grads_adam = sum(trial["memory_bytes"][k] for k in ("weights", "gradients", "adamw"))
    assert weights_grads_adam == 16 * production[True]["models"]["student"]["params"]  # 16 bytes per parameter
    assert any("needs" in p and "> 80 GiB" in p for p in problems_of(one_gpu, "tune"))
    assert not problems_of(production[True], "tune")  # the production config's 4-GPU FSDP2 trials fit
    small = build_plan(load_config(PRODUCTION, ["models.student=builtin:student", "models.teacher=builtin:teacher",
                                                "models.tokenizer=builtin"]), CLUSTER, 1000, None)
    assert not problems_of(small, "tune")  # the same trial shape with a small student fits


def test_cache_and_serving_engines_fit_their_gpus(production):
    cache = stage(production[True], "cache")
    assert cache["engine"] == "vllm" and cache["kv_tokens"] >= 4096
    assert cache["memory_bytes"]["weights"] == 70_553_706_496 * 2 // 4  # bf16 over tensor_parallel=4
    assert production[True]["placements"]["serve"]["nodes"] == {"gpu-train-p5": 2, "gpu-infer-p4de": 1}


def test_kv_cache_too_small_for_max_model_len_is_flagged():
    # 40 GiB per GPU: weights 32.9 + reserve 2 leave ~5 GiB x 4 GPUs = ~65k tokens, short of the 128k context
    # that max_model_len=0 (the model's own) asks vLLM to hold
    cfg = load_config(PRODUCTION, ["cache.vllm.gpu_memory_utilization=0.5", "cache.vllm.max_model_len=0"])
    lines = problems_of(build_plan(cfg, CLUSTER, 1000, None), "cache")
    assert len(lines) == 1 and "< max_model_len 131072" in lines[0]


def test_json_output_parses(capsys, monkeypatch):
    proc = run_plan(capsys, monkeypatch, "--config", str(DEMO), "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["fits"] and {s["stage"] for s in plan["stages"]} >= {"finetune", "cache", "distill", "tune"}


def test_production_text_report_fits_and_a_flagged_stage_exits_1_naming_it(capsys, monkeypatch):
    proc = run_plan(capsys, monkeypatch, "--config", str(PRODUCTION))
    assert proc.returncode == 0 and "2 x gpu-train-p5" in proc.stdout and "every stage fits" in proc.stdout
    proc = run_plan(capsys, monkeypatch, "--config", str(PRODUCTION), "tune.workers_per_trial=1",
                    "tune.gpus_per_trial=1")
    assert proc.returncode == 1, proc.stderr
    assert "\n  tune: needs" in proc.stdout


@pytest.mark.parametrize("override, says", [
    ("models.teacher=acme/unknown-70b", "acme/unknown-70b: no local config.json"),
    ("finetune.lora_rank=8", "unknown key 'finetune.lora_rank'"),
])
def test_bad_config_or_unknown_model_exits_2_with_one_line(capsys, monkeypatch, override, says):
    proc = run_plan(capsys, monkeypatch, "--config", str(PRODUCTION), override)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and says in proc.stderr


def _saved_bytes(model: torch.nn.Module, ids: torch.Tensor, bf16: bool) -> int:
    """Bytes autograd saves for backward in one forward pass (storages counted once, weights left out)."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.nn.Parameter):
            seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())


@pytest.mark.parametrize("bf16", [True, False])
def test_block_activation_formula_matches_what_autograd_saves(bf16):
    from transformers import LlamaConfig, LlamaForCausalLM

    def model(layers: int) -> torch.nn.Module:
        return LlamaForCausalLM(LlamaConfig(hidden_size=384, intermediate_size=1000, num_hidden_layers=layers,
                                            num_attention_heads=6, num_key_value_heads=2, vocab_size=500,
                                            attn_implementation="sdpa"))

    torch.manual_seed(0)
    ids = torch.randint(0, 500, (2, 96))
    one, two = model(1), model(2)
    block = _saved_bytes(two, ids, bf16) - _saved_bytes(one, ids, bf16)
    shape = model_shape("x", one)
    linear = shape.linear_params - 500 * 384  # one block's linear weights (the LM head is not in a block)
    # bf16: autocast's bf16 weight copies are saved too; fp32: the saved "weights" are views of the parameters
    weights = (2 if bf16 else 4) * linear
    assert abs(block - weights - 2 * 96 * block_activation_bytes(shape, bf16)) < 0.01 * block


def probe(kind: str) -> dict:
    """Run tests/raykd/plan/plan_peak_probe.py KIND in a fresh process (peak RSS is per process)."""
    script = Path(__file__).parent / "plan_peak_probe.py"
    out = subprocess.run([sys.executable, str(script), kind], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_training_memory_estimate_matches_a_measured_cpu_peak():
    figures = probe("train")
    assert 0.8 < figures["estimate"] / figures["measured"] < 1.25, figures


@pytest.mark.slow
def test_fused_loss_temporaries_match_a_measured_peak():
    copies = probe("loss")["fused_loss_copies"]
    assert abs(copies - FUSED_LOSS_COPIES) < 1.5, copies


def test_cache_row_bytes_equal_what_the_scorer_writes():
    from raykd.cache.scorer import TeacherScorer, rows_of_part
    from raykd.models.load import resolve_model

    cfg = load_config(DEMO)
    scorer = TeacherScorer(cfg.to_dict(), resolve_model(cfg.models.teacher))
    rows = rows_of_part(scorer({"prompt": np.array(["question: what is a fox?", ""]),
                                "target": np.array([" an animal", "red"]), "messages": np.array(["", ""]),
                                "held_out": np.array([False, False])}),
                        held_out=False)
    written = sum(sum(row.nbytes for row in column) for column in rows.values())
    vocab = architecture_config(cfg.models.teacher).vocab_size
    targets = (rows["labels"] != -100).sum(axis=1).tolist()
    assert written == sum(cache_bytes_per_row(cfg.data.max_seq_len, cfg.cache.top_k, vocab, cfg.cache.tail_samples,
                                              len(TAIL_TEMPERATURES), causal=True, targets=t) for t in targets)
    assert sum(targets) < 2 * cfg.data.max_seq_len  # the prompt and padding positions are not stored


def test_local_data_is_counted(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n{"text": "y"}\n\n{"text": "z"}\n')
    (tmp_path / "b.csv").write_text("text,label\nx,0\ny,1\n")
    pq.write_table(pa.table({"text": ["x"] * 5}), tmp_path / "c.parquet")
    assert [count_rows(str(tmp_path / n)) for n in ("a.jsonl", "b.csv", "c.parquet")] == [3, 2, 5]
    assert count_rows("s3://bucket/x.jsonl") is None and count_rows("builtin:eval") > 0


def test_placement_follows_the_autoscalers_choice():
    big_cpu = NodeType("a-gpu", 192, 8, 2, 80, None)
    lean = NodeType("b-gpu", 96, 8, 1, 80, None)
    cpu = NodeType("c-cpu", 32, 0, 4, None, None)
    # fewer idle CPUs per GPU ask wins; past its max_workers the rest spills to the other type
    nodes, placed, unplaced = place([{"CPU": 8, "GPU": 1}] * 16, [big_cpu, lean, cpu])
    assert nodes == {"b-gpu": 1, "a-gpu": 1} and unplaced == 0 and placed["b-gpu"] == 8
    assert place([{"CPU": 1, "GPU": 0}] * 3, [big_cpu, lean, cpu])[0] == {"c-cpu": 1}  # CPU work avoids GPUs
    assert place([{"CPU": 8, "GPU": 16}], [big_cpu, lean])[2] == 1  # no type holds 16 GPUs
    twin = NodeType("z-gpu", 96, 8, 1, 80, None)
    assert place([{"CPU": 8, "GPU": 1}] * 8, [lean, twin])[0] == {"z-gpu": 1}  # a tie goes to the greater name


def test_gpu_memory_comes_from_the_cluster_labels_or_the_flag():
    cfg = load_config(DEMO)
    assert build_plan(cfg, CLUSTER, 10, None)["gpu_memory_gib"] == 80
    assert build_plan(cfg, CLUSTER, 10, 40.0)["gpu_memory_gib"] == 40
    assert GIB == 1 << 30


def test_a_hugging_face_datasets_directory_is_counted(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"text": str(i)} for i in range(7)]).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "x"}])}).save_to_disk(str(tmp_path / "dict"))
    assert count_rows(str(tmp_path / "saved")) == 7 and count_rows(str(tmp_path / "dict")) is None
    assert count_rows(str(tmp_path / "dict" / "train")) == 1
