"""Stage 2: run the teacher once over the distillation data and cache its top-k logits.

    raykd cache --config configs/demo.yaml
    python -m ray_jobs.cache_teacher_logits --config configs/demo.yaml cache.top_k=32
    ray job submit --working-dir . -- python -m ray_jobs.cache_teacher_logits --config configs/llama70b_to_7b.yaml

Ray Data ``map_batches`` over the labeled and unlabeled data with a pool of teacher actors. Unlabeled
prompts are first completed by the teacher (sequence-level distillation) and the logits are kept
over prompt + completion. Writes Parquet shards + ``manifest.json`` to ``RUN/teacher_cache/`` and
publishes the cache to the object store under a detached actor (see ``ray_jobs.teacher_cache``).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import ray
import ray.data
import torch

from ray_jobs.config import ConfigError, DataConfig, RaykdConfig
from ray_jobs.data import IGNORE_INDEX, cached_tokenizer, check_fields, encode_lm_row, pad_rows, read_dataset
from ray_jobs.launch import parse_stage_args, run_stage, write_metrics
from ray_jobs.models import load_model
from ray_jobs.scoring import generate_completions
from ray_jobs.teacher_cache import (
    MANIFEST_FILE,
    SCHEMA_VERSION,
    SHARDS_DIR,
    CacheManifest,
    publish,
    teacher_hash,
    tokenizer_hash,
)


def teacher_dir(cfg: RaykdConfig) -> str:
    """The teacher being cached: ``cache.teacher`` or the fine-tuned ``RUN/teacher``."""
    path = cfg.cache.teacher or str(cfg.stage_dir("teacher"))
    if not (Path(path) / "config.json").exists():
        raise ConfigError(f"{path}: no teacher model here; run `raykd finetune` first or set cache.teacher")
    return path


def normalize(batch: dict, kind: str, labeled: bool, data: dict) -> dict:
    """Rows of any source → ``prompt``, ``target`` ('' = the teacher completes it), ``label`` (-1 = unknown)."""
    cfg = DataConfig(**data)
    n = len(next(iter(batch.values())))
    if kind == "classification":
        labels = batch[cfg.label_field] if labeled else np.full(n, -1)
        return {"prompt": batch[cfg.text_field].astype(str), "target": np.full(n, ""),
                "label": np.asarray(labels, dtype=np.int64)}
    if kind == "prompt":
        targets = batch[cfg.completion_field].astype(str) if labeled else np.full(n, "")
        return {"prompt": batch[cfg.prompt_field].astype(str), "target": targets, "label": np.full(n, -1)}
    return {"prompt": np.full(n, ""), "target": batch[cfg.text_field].astype(str), "label": np.full(n, -1)}


class TeacherScorer:
    """Ray Data actor: holds the teacher; completes target-less prompts, then keeps top-k per target."""

    def __init__(self, cfg_dict: dict, model_dir: str):
        from ray_jobs.config import from_dict

        self.cfg = from_dict(cfg_dict)
        gpus = self.cfg.cache.gpus_per_actor if torch.cuda.is_available() else 0
        self.device = torch.device("cuda" if gpus else "cpu")
        # A teacher too big for one GPU (gpus_per_actor > 1) is spread over the actor's GPUs, in bf16.
        big = {"dtype": torch.bfloat16, "device_map": "auto"} if gpus > 1 else {}
        self.model = load_model(model_dir, self.cfg.task, self.cfg.data.num_labels, **big).eval()
        if not big:
            self.model.to(self.device)
        self.tokenizer = cached_tokenizer(model_dir)
        self.vocab = len(self.tokenizer) if self.cfg.task == "causal_lm" else self.cfg.data.num_labels
        self.index_dtype = np.int16 if self.vocab <= np.iinfo(np.int16).max else np.int32

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        if self.cfg.task == "sequence_classification":
            return self._classification(batch)
        prompts, targets = list(batch["prompt"]), list(batch["target"])
        todo = [i for i, t in enumerate(targets) if not t and prompts[i]]
        if todo:
            done = generate_completions(self.model, self.tokenizer, [prompts[i] for i in todo],
                                        self.cfg.data.max_new_tokens, self.cfg.data.max_seq_len, len(todo),
                                        self.cfg.cache.do_sample, self.cfg.cache.sample_temperature)
            for i, completion in zip(todo, done):
                targets[i] = completion
        width = self.cfg.data.max_seq_len
        encoded = [encode_lm_row(self.tokenizer, p, t, width) for p, t in zip(prompts, targets)]
        ids = pad_rows([e[0] for e in encoded], self.tokenizer.pad_token_id, width)
        labels = pad_rows([e[1] for e in encoded], IGNORE_INDEX, width)
        mask = pad_rows([[1] * len(e[0]) for e in encoded], 0, width)
        logits = self.model(input_ids=torch.as_tensor(ids, device=self.device),
                            attention_mask=torch.as_tensor(mask, device=self.device)).logits[..., : self.vocab]
        values, indices, lse = self._topk(logits.float())  # (B, S, k), (B, S, k), (B, S) at the predicting position
        # Shift so position j holds the distribution *for* token j (predicted at j-1), like labels.
        out_values = np.zeros_like(values)
        out_indices = np.zeros_like(indices)
        out_lse = np.zeros_like(lse)
        out_values[:, 1:], out_indices[:, 1:], out_lse[:, 1:] = values[:, :-1], indices[:, :-1], lse[:, :-1]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "values": out_values, "indices": out_indices, "lse": out_lse}

    def _topk(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = min(self.cfg.cache.top_k, logits.shape[-1])
        values, indices = logits.topk(k, dim=-1)
        lse = torch.logsumexp(logits, dim=-1)
        return (values.half().cpu().numpy(), indices.cpu().numpy().astype(self.index_dtype),
                lse.cpu().numpy().astype(np.float32))

    def _classification(self, batch: dict) -> dict:
        width = self.cfg.data.max_seq_len
        enc = [[self.tokenizer.bos_token_id] + self.tokenizer(str(t)).input_ids[: width - 1] for t in batch["prompt"]]
        ids, mask = pad_rows(enc, self.tokenizer.pad_token_id, width), pad_rows([[1] * len(e) for e in enc], 0, width)
        logits = self.model(input_ids=torch.as_tensor(ids, device=self.device),
                            attention_mask=torch.as_tensor(mask, device=self.device)).logits.float()[:, None, :]
        values, indices, lse = self._topk(logits)  # (B, 1, k)
        given = np.asarray(batch["label"], dtype=np.int64)
        labels = np.where(given >= 0, given, logits[:, 0].argmax(-1).cpu().numpy())[:, None]  # pseudo-labels
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "values": values, "indices": indices, "lse": lse}


def sources(cfg: RaykdConfig) -> list[tuple[str, bool]]:
    """(data spec, labeled) pairs the cache covers."""
    chosen = [(cfg.data.train, True)] * cfg.cache.include_train + [(cfg.data.unlabeled, False)] * \
        cfg.cache.include_unlabeled
    if not chosen:
        raise ConfigError("cache.include_train and cache.include_unlabeled are both false: nothing to cache")
    return chosen


def distillation_rows(cfg: RaykdConfig) -> ray.data.Dataset:
    """Every source read, checked and normalised to one schema, unioned."""
    parts = []
    for spec, labeled in sources(cfg):
        ds = read_dataset(spec)
        kind = check_fields(ds, spec, cfg.data, cfg.task, labeled)
        parts.append(ds.map_batches(normalize, batch_format="numpy", fn_kwargs={
            "kind": kind, "labeled": labeled, "data": dataclasses.asdict(cfg.data)}))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def run(cfg: RaykdConfig) -> dict:
    """Cache the teacher's top-k logits; returns the metrics."""
    started = time.time()
    model_dir = teacher_dir(cfg)
    out = cfg.stage_dir("teacher_cache")
    rows = distillation_rows(cfg)
    total = rows.count()
    print(f"[cache] scoring {total} rows with {cfg.cache.actors} teacher actor(s), top_k={cfg.cache.top_k}")
    scored = rows.map_batches(
        TeacherScorer, batch_format="numpy", batch_size=cfg.cache.batch_size, concurrency=cfg.cache.actors,
        num_cpus=cfg.cache.cpus_per_actor, num_gpus=cfg.cache.gpus_per_actor or None,
        fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "model_dir": model_dir},
    )
    shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)  # a re-run replaces the cache, never appends to it
    scored.write_parquet(str(out / SHARDS_DIR))
    forward_s = time.time() - started
    shards = list((out / SHARDS_DIR).glob("*.parquet"))
    stored = ray.data.read_parquet(str(out / SHARDS_DIR))
    tokens = int(stored.map_batches(lambda b: {"n": (b["labels"] != IGNORE_INDEX).sum(axis=-1)},
                                    batch_format="numpy").sum("n"))
    first = stored.take(1)[0]
    manifest = CacheManifest(
        schema_version=SCHEMA_VERSION, teacher_hash=teacher_hash(model_dir), tokenizer_hash=tokenizer_hash(model_dir),
        vocab_size=len(cached_tokenizer(model_dir)) if cfg.task == "causal_lm" else cfg.data.num_labels,
        k=int(first["values"].shape[-1]), values_dtype=str(first["values"].dtype),
        indices_dtype=str(first["indices"].dtype), max_seq_len=cfg.data.max_seq_len, task=cfg.task, rows=total,
        tokens=tokens, bytes=sum(p.stat().st_size for p in shards), sources=[s for s, _ in sources(cfg)],
        teacher_forward_s=forward_s,
    )
    manifest.write(out)
    holder = publish(out, manifest)
    metrics = dataclasses.asdict(manifest) | {
        "rows_per_s": total / forward_s, "bytes_per_token": manifest.bytes / max(1, tokens),
        "full_fp32_bytes_per_token": 4 * manifest.vocab_size, "object_store_actor": holder,
        "wall_s": time.time() - started,
    }
    write_metrics(out, metrics)
    print(f"[cache] {total} rows, {tokens} target tokens, {metrics['bytes_per_token']:.1f} bytes/token "
          f"(full fp32 logits: {metrics['full_fp32_bytes_per_token']}), {metrics['rows_per_s']:.1f} rows/s; "
          f"{out / MANIFEST_FILE}; object store actor {holder}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    cfg = parse_stage_args(argv, __doc__.splitlines()[0])
    run_stage(run, cfg)


if __name__ == "__main__":
    main()
