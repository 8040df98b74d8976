"""Run identity: a training run (fine-tune, distillation, the baseline, a sweep) is named by a
fingerprint of everything that determines its result, so a re-run with the same inputs resumes its
checkpoints and a re-run with new inputs trains afresh under its own name — never the old run's.

What goes in: the task and seed, the models (their directories' contents where they are
directories), the tokenizer, the training data (a file's size and modification time; a cache's
manifest), the data section and the stage's own section. What stays out: knobs that change how a
run is executed or reported, never what it computes (``IGNORED_KNOBS``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from raykd.builtin.data import generate_split
from raykd.cache.schema import CacheManifest
from raykd.config import RaykdConfig, TrainConfig
from raykd.models.hashes import model_hash, tokenizer_hash
from raykd.models.load import resolve_model

IGNORED_KNOBS = frozenset({"log_every", "max_failures", "run_name", "checkpoint_every", "cpus_per_worker",
                           "gpus_per_worker", "output"})
FINGERPRINT_FILE = "fingerprint.json"


def source_identity(spec: str) -> str:
    """What names a data source's content: a built-in split by the hash of its rows (generated
    deterministically); a local file (or each file of a directory) by path, size and modification time; a
    URI as written."""
    if spec.startswith("builtin:"):
        rows = json.dumps(generate_split(spec.split(":", 1)[1]), sort_keys=True).encode()
        return f"{spec}#{hashlib.sha256(rows).hexdigest()[:12]}"
    if "://" in spec or not os.path.exists(spec):
        return spec
    files = sorted(Path(spec).rglob("*")) if os.path.isdir(spec) else [Path(spec)]
    return ";".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file())


def model_identity(spec: str, cfg: RaykdConfig) -> str:
    """A model spec with the content hash of its directory's config and weights (a re-trained teacher
    in the same place is another model); hashed once per content, recorded in the run directory."""
    if spec.startswith(("tiny:", "teacher-layers:")):
        return spec
    path = resolve_model(spec)
    return f"{spec}#{model_hash(path, cfg.run_dir)}" if os.path.isdir(path) else spec


def cache_identity(cache_dir: Path) -> str:
    """The cache's manifest, less what a re-run of the same cache changes (its timing) and what no
    student trains on (the held-out rows: ``raykd tune`` adds them where it ranks by them)."""
    manifest = dataclasses.asdict(CacheManifest.read(cache_dir))
    for key in ("teacher_forward_s", "held_out_rows", "held_out_shards"):
        manifest.pop(key)
    return json.dumps(manifest, sort_keys=True)


SPLIT_KNOBS = frozenset({"workers", "batch_size", "grad_accum", "sharding"})  # how the global batch is split


def stage_knobs(stage: TrainConfig) -> dict:
    """The knobs that name a training run. The global batch (workers x batch_size x grad_accum) is one
    of them, not how it is split over workers, micro-batches and shards: the same run resumes on another
    world size (its DCP checkpoint is resharded on load)."""
    knobs = {k: v for k, v in dataclasses.asdict(stage).items() if k not in IGNORED_KNOBS | SPLIT_KNOBS}
    return knobs | {"global_batch": stage.workers * stage.batch_size * stage.grad_accum}


def common_inputs(cfg: RaykdConfig, tokenizer_dir: str) -> dict:
    """The inputs every training run shares: task, seed, tokenizer, data settings."""
    data = dataclasses.asdict(cfg.data)
    for held_out in ("eval", "test", "eval_examples", "max_new_tokens"):  # scored after training, not trained on
        data.pop(held_out)
    return {"task": cfg.task, "seed": cfg.seed, "tokenizer": tokenizer_hash(tokenizer_dir),
            "trust_remote_code": cfg.models.trust_remote_code, "data": data}


def fingerprint(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_name(base: str, inputs: dict, storage: Path, stage: str) -> str:
    """``<base>-<fingerprint>``, its inputs written beside its checkpoints (``fingerprint.json``, to see
    what differs); one line when earlier runs under ``base`` had other inputs and this one starts afresh.
    (A run with the same inputs resumes its checkpoints; the training loop says from which step.)"""
    name = f"{base}-{fingerprint(inputs)}"
    run_dir = storage / name
    others = sorted(p.name for p in storage.glob(f"{base}-*") if p.is_dir() and p.name != name)
    if others and not run_dir.exists():
        print(f"[{stage}] inputs differ from the earlier run(s) {', '.join(others)} in {storage}: training afresh "
              f"as {name}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FINGERPRINT_FILE).write_text(json.dumps(inputs, indent=2, sort_keys=True, default=str) + "\n")
    return name


def finetune_inputs(cfg: RaykdConfig, tokenizer_dir: str) -> dict:
    return common_inputs(cfg, tokenizer_dir) | {"stage": "finetune", "teacher": model_identity(cfg.models.teacher, cfg),
                                                "train": source_identity(cfg.data.train),
                                                "knobs": stage_knobs(cfg.finetune)}


def distill_inputs(cfg: RaykdConfig, tokenizer_dir: str, teacher: str | None) -> dict:
    """The student base, the knobs, and where the targets come from: the cache's manifest (which names
    its teacher, tokenizer and sources), or the labeled data for the no-teacher baseline; ``teacher``
    (its directory) where the run reads the teacher's weights."""
    d = cfg.distill
    inputs = common_inputs(cfg, tokenizer_dir) | {"stage": "distill", "knobs": stage_knobs(d),
                                                  "student": model_identity(cfg.models.student, cfg)}
    if d.teacher_source == "none":
        inputs["train"] = source_identity(cfg.data.train)
    else:
        inputs["cache"] = cache_identity(cfg.stage_dir("teacher_cache"))
    if d.teacher_source == "online" or cfg.models.student.startswith("teacher-layers:"):
        inputs["teacher"] = model_identity(teacher, cfg)
    return inputs
