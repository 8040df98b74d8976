"""Which pipeline stages are done: a stage is skipped only when its outputs exist and were made from
the current config and the current outputs of the stages it reads.

When a stage finishes, the pipeline writes a record, ``RUN/pipeline/stages/<stage>.json``, holding
the stage's fingerprint and the SHA-256 of the file the stage writes last (its *result file*:
``metrics.json``, the cache's ``manifest.json``). The fingerprint covers the config keys the stage
reads (``STAGES[stage].reads``, less how a run is executed or reported: ``EXECUTION_ONLY``), the
content identity of the data files and base models it names, and the SHA-256 of each upstream
stage's result file. So a re-trained teacher (by the pipeline or by a separate ``raykd finetune``)
changes the cache's fingerprint, a changed ``distill.alpha`` redoes distillation and what follows it,
and a changed ``serve.compare_requests`` redoes only ``compare``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

from raykd.config import RaykdConfig
from raykd.pipeline.runs import IGNORED_KNOBS, fingerprint, model_identity, source_identity

RECORDS_DIR = ("pipeline", "stages")
DATA_SOURCES = ("train", "eval", "test", "unlabeled")
# Knobs that change how a stage runs, never what it computes: the training runs' (``runs.IGNORED_KNOBS``)
# and where the server listens.
EXECUTION_ONLY = IGNORED_KNOBS | {"host", "port"}
MODEL_SPECS = ("teacher", "student")


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """What a stage reads and where it leaves its result."""

    output: str  # directory under RUN/ ("student" stands for ``distill.output``)
    result_file: str  # written last by the stage: its presence means the stage finished
    reads: tuple[str, ...]  # config keys (sections or dotted leaves); "-key" drops a key again
    upstream: tuple[str, ...]  # stages whose results it reads
    needs: tuple[str, ...] = ()  # further files its output must hold to be usable


STAGES: dict[str, StageSpec] = {
    "finetune": StageSpec("teacher", "metrics.json", ("task", "seed", "models", "-models.student", "data",
                                                      "-data.unlabeled", "-data.test", "finetune",
                                                      "evaluate.scorer"), (),
                          ("config.json",)),
    "cache": StageSpec("teacher_cache", "manifest.json", ("task", "seed", "models", "-models.student", "data",
                                                          "-data.test", "cache"), ("finetune",)),
    "distill": StageSpec("student", "metrics.json", ("task", "seed", "models", "data", "-data.test", "distill",
                                                     "evaluate.scorer"),
                         ("cache",), ("config.json",)),
    "evaluate": StageSpec("report", "metrics.json", ("task", "seed", "models", "data", "distill", "evaluate"),
                          ("finetune", "distill"), ("report.json",)),
    "tune": StageSpec("tune", "metrics.json", ("task", "seed", "models", "data", "-data.test", "distill", "tune",
                                               "evaluate.scorer"),
                      ("cache",)),
    "compare": StageSpec("serve_compare", "metrics.json", ("task", "data.test", "data.format", "data.prompt_field",
                                                           "data.messages_field", "models", "serve"),
                         ("finetune", "distill")),
}
ORDER = tuple(STAGES)


def output_dir(cfg: RaykdConfig, stage: str) -> Path:
    out = STAGES[stage].output
    return cfg.stage_dir(cfg.distill.output if out == "student" else out)


def record_path(cfg: RaykdConfig, stage: str) -> Path:
    return cfg.stage_dir(RECORDS_DIR[0]) / RECORDS_DIR[1] / f"{stage}.json"


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def config_reads(cfg: RaykdConfig, reads: tuple[str, ...]) -> dict:
    """The config keys in ``reads`` as ``{dotted key: value}``, execution-only knobs left out."""
    flat = _flatten(cfg.to_dict())
    keep = {k for k in flat if any(k == r or k.startswith(r + ".") for r in reads if not r.startswith("-"))}
    drop = {k for k in keep for r in reads if r.startswith("-") and (k == r[1:] or k.startswith(r[1:] + "."))}
    return {k: flat[k] for k in sorted(keep - drop) if k.rsplit(".", 1)[-1] not in EXECUTION_ONLY}


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        out |= _flatten(value, name + ".") if isinstance(value, dict) else {name: value}
    return out


def stage_fingerprint(cfg: RaykdConfig, stage: str) -> str:
    """The fingerprint of what ``stage`` would compute now (see the module docstring)."""
    spec = STAGES[stage]
    reads = config_reads(cfg, spec.reads)
    contents = {f"data.{s}": source_identity(reads[f"data.{s}"]) for s in DATA_SOURCES if f"data.{s}" in reads}
    contents |= {f"models.{m}": model_identity(reads[f"models.{m}"], cfg) for m in MODEL_SPECS
                 if f"models.{m}" in reads and not reads[f"models.{m}"].startswith("teacher-layers:")}
    upstream = {up: file_digest(output_dir(cfg, up) / STAGES[up].result_file) for up in spec.upstream}
    return fingerprint({"stage": stage, "config": reads, "contents": contents, "upstream": upstream})


def stage_status(cfg: RaykdConfig, stage: str) -> tuple[bool, str]:
    """(done, why): done when the stage's record matches its outputs and its fingerprint now."""
    spec, out, record = STAGES[stage], output_dir(cfg, stage), record_path(cfg, stage)
    if not record.is_file():
        return False, "not run yet"
    saved = json.loads(record.read_text())
    missing = [n for n in (spec.result_file, *spec.needs) if not (out / n).is_file()]
    if missing:
        return False, f"{out} lacks {', '.join(missing)}"
    if file_digest(out / spec.result_file) != saved.get("result_sha256"):
        return False, f"{out / spec.result_file} changed since the pipeline ran this stage"
    if stage_fingerprint(cfg, stage) != saved.get("fingerprint"):
        return False, "the config or an upstream stage's output changed"
    return True, f"{out} matches this config"


def write_record(cfg: RaykdConfig, stage: str, wall_s: float) -> None:
    """Record ``stage`` as done (after it wrote its result file); written atomically."""
    spec, out, record = STAGES[stage], output_dir(cfg, stage), record_path(cfg, stage)
    data = {"stage": stage, "fingerprint": stage_fingerprint(cfg, stage),
            "result_sha256": file_digest(out / spec.result_file), "wall_s": round(wall_s, 1),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_suffix(".tmp")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.replace(record)


def recorded_wall_s(cfg: RaykdConfig, stage: str) -> float:
    return json.loads(record_path(cfg, stage).read_text())["wall_s"]


def forced(stage: str, force: str | None) -> bool:
    """``--force STAGE`` redoes STAGE and every stage after it."""
    return force is not None and ORDER.index(stage) >= ORDER.index(force)
