"""``raykd plan``: a capacity plan of a config on a cluster.yaml, with no weights loaded.

    raykd plan --config configs/llama70b_to_8b.yaml [--cluster cluster.yaml] [--json] [key=value ...]
    python -m raykd.plan.planner --config configs/llama70b_to_8b.yaml finetune.activation_checkpointing=false

Builds the teacher and the student on the meta device (``raykd.plan.arch``), counts their parameters (and
LoRA's), estimates each stage's per-GPU memory (``raykd.plan.capacity``, formulas in its docstrings), sizes
the teacher cache, and packs each stage's Ray asks onto cluster.yaml's worker node types. A stage that
cannot fit is flagged with one line. Exit status: 0 everything fits, 1 something is flagged, 2 bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from raykd.config import ConfigError, RaykdConfig, load_config
from raykd.launch import config_parser, fail
from raykd.plan.arch import ModelShape, architecture_config, lora_params, meta_model, model_shape
from raykd.plan.capacity import GIB, cache_bytes_per_row
from raykd.plan.cluster_spec import GPU_MEMORY_LABEL, NodeType, holds, place, read_node_types
from raykd.plan.data_rows import cache_rows
from raykd.plan.report import render_text
from raykd.plan.stages import StagePlan, cache_stage, distill_stage, finetune_stage, serve_stages, tune_stage

DEFAULT_GPU_GIB = 80.0  # an A100/H100 80GB when neither --gpu-memory-gib nor cluster.yaml's labels say
DEFAULT_ROWS = 100_000  # rows assumed per data source that cannot be counted here (a URI): --rows
EXIT_FLAGGED = 1


def _gib(n: float) -> float:
    return round(n / GIB, 1)


def models_section(cfg: RaykdConfig) -> tuple[ModelShape, ModelShape, dict]:
    """The teacher's and the student's shapes (meta device) and their JSON summary, LoRA included."""
    trust, task, labels = cfg.models.trust_remote_code, cfg.task, cfg.data.num_labels
    teacher_meta = meta_model(architecture_config(cfg.models.teacher, trust), task, labels, trust)
    student_config = architecture_config(cfg.models.student, trust, teacher=cfg.models.teacher)
    teacher, student = model_shape(cfg.models.teacher, teacher_meta), model_shape(
        cfg.models.student, meta_model(student_config, task, labels, trust))
    lora, targets = lora_params(teacher_meta, cfg.finetune.lora_target_modules, cfg.finetune.lora_r, task) \
        if cfg.finetune.method == "lora" else (teacher.params, [])
    # all-linear resolves to every block's qualified names: the leaf names say the same in a line
    leaves = sorted({t.rsplit(".", 1)[-1] for t in targets})
    summary = {"teacher": dataclasses.asdict(teacher) | {"trainable": lora, "lora_targets": leaves},
               "student": dataclasses.asdict(student) | {"trainable": student.params}}
    return teacher, student, summary


def gpu_memory_gib(node_types: list[NodeType], given: float | None) -> float:
    """Per-GPU memory the plan checks against: ``--gpu-memory-gib``, else the smallest that cluster.yaml's
    GPU node types state, else ``DEFAULT_GPU_GIB``."""
    stated = [t.gpu_memory_gib for t in node_types if t.gpus and t.gpu_memory_gib]
    return given or (min(stated) if stated else DEFAULT_GPU_GIB)


def memory_problems(plan: StagePlan, gpu_gib: float) -> list[str]:
    """One line per way one of ``plan``'s asks cannot fit its GPU (memory, load, KV cache)."""
    name, problems = plan.stage, []
    if plan.on_gpu and plan.per_device > gpu_gib * GIB:
        terms = " + ".join(f"{k} {_gib(v)}" for k, v in plan.memory.items() if v)
        problems.append(f"{name}: needs {_gib(plan.per_device)} GiB per GPU ({terms}) > {gpu_gib:g} GiB")
    if plan.on_gpu and plan.load > gpu_gib * GIB:
        problems.append(f"{name}: loading puts {_gib(plan.load)} GiB of fp32 weights on one GPU (the whole model "
                        f"unless FSDP2 shards it over several workers) > {gpu_gib:g} GiB")
    if plan.engine is not None and not plan.engine.fits:
        problems.append(f"{name}: the KV cache holds {plan.engine.kv_tokens} tokens < max_model_len "
                        f"{plan.engine.context} (weights take {_gib(plan.engine.weights_per_gpu)} GiB per GPU)")
    return problems


def placement(group: list[StagePlan], node_types: list[NodeType]) -> tuple[dict, list[str]]:
    """Where the asks of a group of stages that run together (a stage, or serving's two arms) land
    (``raykd.plan.cluster_spec.place``), and one line per problem: asks with no room, host RAM over what a node
    type states (every training worker builds its fp32 model in host RAM before moving it to its GPU)."""
    name = group[0].stage.split(":")[0]
    asks = [plan.ask for plan in group for _ in range(plan.count)]
    nodes, placed, unplaced = place(asks, node_types)
    problems = []
    if unplaced:
        holders = [t.name for t in node_types if holds(t, asks[-1])]
        why = f"max_workers of {', '.join(holders)} used up" if holders else f"no worker node type holds {asks[-1]}"
        problems.append(f"{name}: {unplaced} of {len(asks)} asks find no node ({why})")
    host_each = max(max(plan.load, 0 if plan.on_gpu else plan.per_device) for plan in group)
    for node in node_types:
        if node.name in nodes and node.host_memory_gib:
            per_node = math.ceil(placed[node.name] / nodes[node.name])
            if per_node * host_each > node.host_memory_gib * GIB:
                problems.append(f"{name}: {per_node} per node hold {_gib(per_node * host_each)} GiB of host RAM "
                                f"(each builds its fp32 model there) > {node.host_memory_gib:g} GiB of {node.name}")
    return {"nodes": nodes, "asks": len(asks), "unplaced": unplaced}, problems


def cache_section(cfg: RaykdConfig, teacher: ModelShape, engine: str, rows: int) -> dict:
    """The teacher cache's size on storage, uncompressed, at most (``raykd.plan.capacity.cache_bytes_per_row``:
    every position a target; rows store their targets only); a vLLM cache has no tail columns (vLLM gives
    the top-k only)."""
    from raykd.losses import TAIL_TEMPERATURES

    train, held_out, notes = cache_rows(cfg, rows)
    causal = cfg.task == "causal_lm"
    tail = cfg.cache.tail_samples if engine == "transformers" else 0
    per_row = cache_bytes_per_row(cfg.data.max_seq_len, cfg.cache.top_k, teacher.vocab, tail,
                                  len(TAIL_TEMPERATURES), causal)
    total = (train + held_out) * per_row
    return {"rows": train, "held_out_rows": held_out, "positions": (train + held_out) * (
        cfg.data.max_seq_len if causal else 1), "bytes_per_row": per_row, "bytes": total,
            "gib": _gib(total), "tail_samples": tail, "notes": notes}


def stage_plans(cfg: RaykdConfig, teacher: ModelShape, student: ModelShape, lora: int,
                gpu_gib: float) -> list[list[StagePlan]]:
    """Every stage, grouped by what runs at the same time (serving's two arms share the cluster)."""
    return [[finetune_stage(cfg, teacher, lora)], [cache_stage(cfg, teacher, gpu_gib)],
            [distill_stage(cfg, student, teacher)], [tune_stage(cfg, student, teacher)],
            serve_stages(cfg, teacher, student, gpu_gib)]


def build_plan(cfg: RaykdConfig, cluster: Path | None, rows: int, gpu_gib: float | None) -> dict:
    """The whole plan as a JSON-ready dict: models, cache, stages (asks, memory by term, placement),
    problems (one line each) and whether everything fits."""
    teacher, student, models = models_section(cfg)
    node_types = read_node_types(cluster) if cluster else []
    gpu = gpu_memory_gib(node_types, gpu_gib)
    stages, placements, problems = [], {}, []
    for group in stage_plans(cfg, teacher, student, models["teacher"]["trainable"], gpu):
        group_problems = [line for plan in group for line in memory_problems(plan, gpu)]
        if node_types:
            placements[group[0].stage.split(":")[0]], placed_problems = placement(group, node_types)
            group_problems += placed_problems
        problems += group_problems
        stages += [stage_json(plan, group_problems) for plan in group]
    engine = next(s["engine"] for s in stages if s["stage"] == "cache")
    return {"config": {"run_dir": cfg.run_dir, "task": cfg.task}, "cluster": str(cluster) if cluster else None,
            "gpu_memory_gib": gpu, "models": models,
            "activation_checkpointing": {s: getattr(cfg, s).activation_checkpointing for s in ("finetune", "distill")},
            "cache": cache_section(cfg, teacher, engine, rows), "stages": stages, "placements": placements,
            "problems": problems, "fits": not problems}


def stage_json(plan: StagePlan, group_problems: list[str]) -> dict:
    """One stage of the plan as JSON: its asks, memory of one ask by term (bytes) and verdict. It fits
    unless a line names it (``serve:teacher: ...``) or its group's placement (``serve: ...``)."""
    group = plan.stage.split(":")[0]
    fits = not any(line.startswith((plan.stage + ":", group + ": ")) for line in group_problems)
    return {"stage": plan.stage, "group": group, "ask": plan.ask, "count": plan.count,
            "on_gpu": plan.on_gpu, "engine": plan.engine_name or None, "memory_bytes": plan.memory,
            "per_device_gib": _gib(plan.per_device), "load_gib": _gib(plan.load),
            "kv_tokens": plan.engine.kv_tokens if plan.engine else None, "fits": fits}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """``raykd plan``'s options; config overrides are ``key.sub=value`` as for every stage."""
    parser = config_parser(__doc__.splitlines()[0])
    parser.prog = "raykd plan"
    parser.add_argument("--cluster", default="cluster.yaml",
                        help="Ray cluster-launcher file whose worker node types the stages are packed onto "
                             "(default: ./cluster.yaml; without one, only memory is checked)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"rows assumed per data source that cannot be counted here (default {DEFAULT_ROWS})")
    parser.add_argument("--gpu-memory-gib", type=float, default=None,
                        help=f"GiB per GPU (default: the smallest {GPU_MEMORY_LABEL} label of the cluster file's "
                             f"GPU node types, else {DEFAULT_GPU_GIB:g})")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """``raykd plan``: print the plan; exit 1 if a stage is flagged, 2 (one line) on bad input."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.rows < 1:
            raise ConfigError(f"--rows {args.rows}: give at least 1")
        cluster = Path(args.cluster) if Path(args.cluster).exists() or args.cluster != "cluster.yaml" else None
        plan = build_plan(cfg, cluster, args.rows, args.gpu_memory_gib)
    except ConfigError as e:
        fail(e)
    print(json.dumps(plan, indent=2) if args.json else render_text(plan))
    sys.exit(0 if plan["fits"] else EXIT_FLAGGED)


if __name__ == "__main__":
    main()
