"""Stage 2: run the teacher once over the distillation data and cache its top-k logits.

    raykd cache --config configs/demo.yaml
    python -m ray_jobs.cache_teacher_logits --config configs/demo.yaml cache.top_k=32
    ray job submit --working-dir . -- python -m ray_jobs.cache_teacher_logits --config configs/llama70b_to_8b.yaml

Ray Data ``map_batches`` over the labeled and unlabeled data with a pool of teacher actors:
transformers (``raykd.cache.scorer``) or vLLM (``raykd.cache.vllm_scorer``, ``cache.engine``).
Unlabeled prompts are first completed by the teacher (sequence-level distillation) and the teacher's
summary is kept over prompt + completion: top-k log-probs and a sampled tail (``raykd.losses``), or
with vLLM the top-k alone (``prompt_logprobs``). Writes Parquet shards + ``manifest.json`` (``raykd.cache.schema``,
with a SHA-256 per shard) to ``RUN/teacher_cache/`` (the held-out eval rows, scored for
``tune.metric=kl``, apart in ``held_out/``) and publishes the cache to the object store under
a detached actor named by that content (``raykd.cache.store``), freeing the previous cache's copy.
"""

from __future__ import annotations

import dataclasses
import shutil
import time

import ray
import ray.data

from raykd.cache.schema import HELD_OUT_DIR, MANIFEST_FILE, SCHEMA_VERSION, SHARDS_DIR, CacheManifest
from raykd.cache.scorer import TeacherScorer, distillation_rows, rows_of_part, sources
from raykd.cache.store import publish, shard_checksums
from raykd.cache.vllm_scorer import VLLMTeacherScorer
from raykd.config import RaykdConfig
from raykd.data.datasets import bad_rows_named
from raykd.data.tokens import IGNORE_INDEX, load_tokenizer
from raykd.launch import parse_stage_args, run_stage, write_metrics
from raykd.losses import TAIL_TEMPERATURES
from raykd.models.hashes import model_hash, tokenizer_hash
from raykd.models.teacher import teacher_dir
from raykd.pipeline.state import STAGES
from raykd.tracking.stage import record, stage_run, tracked
from raykd.vllm_support import resolve_engine


def score_rows(cfg: RaykdConfig, engine: str, model_dir: str) -> tuple[ray.data.Dataset, int]:
    """One teacher pass over every source's rows, materialised; and how many rows it scored. A row that
    breaks a reader or a conversion is refused naming its file and line."""
    with bad_rows_named([spec for spec, _ in sources(cfg)] + [cfg.data.eval] * cfg.cache.include_eval):
        rows = distillation_rows(cfg).materialize()  # read once: counted here, scored below
        scoring = rows.count()
        tail = f"tail_samples={cfg.cache.tail_samples}" if engine == "transformers" else "no tail (vLLM: top-k only)"
        print(f"[cache] scoring {scoring} rows with {cfg.cache.actors} {engine} teacher actor(s), "
              f"top_k={cfg.cache.top_k}, {tail}")
        scorer = VLLMTeacherScorer if engine == "vllm" else TeacherScorer
        return rows.map_batches(
            scorer, batch_format="numpy", batch_size=cfg.cache.batch_size, concurrency=cfg.cache.actors,
            num_cpus=cfg.cache.cpus_per_actor, num_gpus=cfg.cache.gpus_per_actor or None,
            fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "model_dir": model_dir, "total_rows": scoring},
        ).materialize(), scoring


def run(cfg: RaykdConfig) -> dict:
    """Cache the teacher's top-k logits; returns the metrics."""
    started = time.time()
    model_dir = teacher_dir(cfg)
    out = cfg.stage_dir("teacher_cache")
    engine = resolve_engine(cfg.cache.engine, "cache.engine", generative=cfg.task == "causal_lm")
    scored, scoring = score_rows(cfg, engine, model_dir)
    parts = {}
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # killed from here on, no manifest names half-written shards
    for part, held_out in ((SHARDS_DIR, False), (HELD_OUT_DIR, True)):
        shutil.rmtree(out / part, ignore_errors=True)  # a re-run replaces the cache, never appends to it
        scored.map_batches(rows_of_part, batch_format="numpy", fn_kwargs={"held_out": held_out}).write_parquet(
            str(out / part))
        parts[part] = shard_checksums(out / part)
    forward_s = time.time() - started
    shards = sorted((out / SHARDS_DIR).glob("*.parquet"))
    stored = ray.data.read_parquet(str(out / SHARDS_DIR))
    total = stored.count()
    tokens = int(stored.map_batches(lambda b: {"n": (b["labels"] != IGNORE_INDEX).sum(axis=-1)},
                                    batch_format="numpy").sum("n"))
    first = stored.take(1)[0]
    manifest = CacheManifest(
        schema_version=SCHEMA_VERSION, teacher_hash=model_hash(model_dir, cfg.run_dir),
        tokenizer_hash=tokenizer_hash(model_dir),
        vocab_size=len(load_tokenizer(model_dir)) if cfg.task == "causal_lm" else cfg.data.num_labels,
        k=int(first["values"].shape[-1]), values_dtype=str(first["values"].dtype),
        indices_dtype=str(first["indices"].dtype), max_seq_len=cfg.data.max_seq_len, task=cfg.task, rows=total,
        tokens=tokens, bytes=sum(p.stat().st_size for p in shards), sources=[s for s, _ in sources(cfg)],
        teacher_forward_s=forward_s, values_kind="logprob", engine=engine,
        tail_samples=int(first["tail_values"].shape[-1]) if "tail_values" in first else 0,
        tail_temperatures=list(TAIL_TEMPERATURES) if "tail_values" in first else [],
        shards=parts[SHARDS_DIR], held_out_shards=parts[HELD_OUT_DIR],
        held_out_rows=ray.data.read_parquet(str(out / HELD_OUT_DIR)).count() if parts[HELD_OUT_DIR] else 0,
    )
    manifest.write(out)
    holder = publish(out, manifest)
    metrics = dataclasses.asdict(manifest) | {
        "rows_per_s": scoring / forward_s, "bytes_per_token": manifest.bytes / max(1, tokens),
        "full_fp32_bytes_per_token": 4 * manifest.vocab_size, "object_store_actor": holder,
        "wall_s": time.time() - started,
    }
    write_metrics(out, metrics)
    with tracked(cfg, stage_run(cfg, "cache")) as tracker:
        record(tracker, metrics, 0, files=(out / MANIFEST_FILE, out / "metrics.json"))
    print(f"[cache] {total} rows (+ {manifest.held_out_rows} held out), {tokens} target tokens, "
          f"{metrics['bytes_per_token']:.1f} bytes/token (full fp32 logits: {metrics['full_fp32_bytes_per_token']}), "
          f"{metrics['rows_per_s']:.1f} rows/s; "
          f"{out / MANIFEST_FILE}; object store actor {holder}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    cfg = parse_stage_args(argv, __doc__.splitlines()[0], STAGES["cache"].reads)
    run_stage("cache", run, cfg)


if __name__ == "__main__":
    main()
