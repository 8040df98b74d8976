"""Distillation from the teacher-logit cache vs the teacher online, side by side in one run.

    python bench/distill_cache.py --run-dir runs/demo [--rows 1024] [--quality-steps 150]
                                  [--out bench/results/distill_cache.json]

Needs a run directory with RUN/teacher and RUN/teacher_cache (``raykd demo`` or finetune + cache).
Measures, with the project's own loss and model code:
1. time per epoch of distillation steps: cached top-k vs online teacher forward vs a plain
   cross-entropy step (the model's own ``labels`` loss, no teacher) — same rows, same student;
2. cache bytes per target token vs full fp32 logits (this vocabulary and a 32k one);
3. error of the top-k KL vs the full-logit KL on real teacher logits, at T = 1, 2, 4;
4. student quality after the same steps trained from the top-k cache vs from full teacher logits;
5. peak memory of the chunked top-k loss vs a naive loss that rebuilds full-vocabulary fp32 teacher
   logits, at a 32k vocabulary (each in its own subprocess, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from results_page import write_results  # sibling bench module

from raykd.cache.schema import SHARDS_DIR, CacheManifest
from raykd.config import load_config
from raykd.evaluation.scoring import score_model
from raykd.losses import kd_full, kd_topk, summarize_teacher
from raykd.models.load import load_model
from raykd.models.student import build_student
from raykd.training.distill import TEACHER_COLUMNS, make_loss_fn, student_positions
from raykd.training.loop import make_optimizer
from raykd.training.on_policy import on_policy_for

MEMORY_PROBE = """
import resource, sys, torch
from raykd.losses import distillation_loss, kd_full, summarize_teacher
n, vocab, k, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
student = torch.randn(n, vocab, dtype=torch.bfloat16, requires_grad=True)
cached = {}
for i in range(0, n, 1024):
    part = summarize_teacher(torch.randn(min(1024, n - i), vocab), k, 32)
    cached = {c: torch.cat([cached[c], v]) if c in cached else v for c, v in part.items()}
labels = torch.randint(0, vocab, (n,))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "chunked":
    loss = distillation_loss(student, labels, cached, 0.5, 2.0, 1024)["loss"]
else:  # naive: rebuild a full fp32 teacher tensor for the batch from the cached top-k
    full = torch.full((n, vocab), -1e4).scatter_(1, cached["indices"], cached["values"].float())
    loss = 0.5 * kd_full(student, full, 2.0).mean() + 0.5 * torch.nn.functional.cross_entropy(student.float(), labels)
loss.backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def cache_rows(run: Path, rows: int) -> dict[str, torch.Tensor]:
    """The first ``rows`` cache rows as dense tensors (teacher columns at their positions)."""
    from raykd.cache.store import dense_rows

    return {c: torch.as_tensor(v) for c, v in dense_rows(str(run / "teacher_cache" / SHARDS_DIR), rows).items()}


def batches(data: dict, size: int):
    n = len(data["input_ids"])
    for i in range(0, n - size + 1, size):
        yield {k: v[i : i + size] for k, v in data.items()}


def cached_run_arguments(doc: str, out: str) -> argparse.ArgumentParser:
    """The arguments of a bench that trains students from a run's cache (``--run-dir``, ``--config``,
    ``--rows``, ``--steps``, ``--out``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--run-dir", default="runs/demo")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", default=out)
    return ap


def step_batches(data: dict, size: int, steps: int):
    """``steps`` batches, cycling through the rows in order."""
    done = 0
    while done < steps:
        for batch in batches(data, size):
            if done == steps:
                return
            yield batch
            done += 1


def trainee(cfg, vocab: int, source: str, steps: int, teachers: list | None = None):
    """A fresh student, a function that trains it one step on a batch with the distil job's loss for
    ``source`` (cache: top-k columns; online: teacher forward; ce: plain CE) and optimiser, and, with
    ``distill.on_policy_fraction``, the ``OnPolicy`` that turns batches into the student's samples
    (scored by ``teachers``; else None)."""
    cfg.distill.teacher_source, cfg.distill.steps = ("cache" if source == "ce" else source), steps
    torch.manual_seed(0)
    student = build_student(cfg)
    teacher = load_model(str(cfg.stage_dir("teacher")), cfg.task, 2).eval().requires_grad_(False) \
        if source == "online" else None
    opt, sched = make_optimizer(student.parameters(), cfg.distill)
    on_policy = on_policy_for(cfg, teachers, student, str(cfg.stage_dir("teacher")))
    loss_fn = make_loss_fn(cfg.distill, cfg.task, vocab, teacher, on_policy)

    def step(batch: dict) -> None:
        student.train()
        if source == "ce":  # what a user trains without a teacher: the model's own shifted CE
            student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"]).loss.backward()
        else:
            if source == "online":
                batch = {k: v for k, v in batch.items() if k not in TEACHER_COLUMNS}
            summed, count, _ = loss_fn(student, batch)
            (summed / count).backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)  # as the distil job does
        opt.step(), sched.step(), opt.zero_grad()

    return student, step, on_policy


def epoch_seconds(cfg, data, vocab, source: str) -> float:
    _, step, _ = trainee(cfg, vocab, source, len(data["input_ids"]) // cfg.distill.batch_size)
    start = time.perf_counter()
    for batch in batches(data, cfg.distill.batch_size):
        step(batch)
    return time.perf_counter() - start


def topk_error(cfg, data, vocab, k_values=(4, 16)) -> dict:
    teacher = load_model(str(cfg.stage_dir("teacher")), cfg.task, 2).eval()
    student = build_student(cfg).eval()
    batch = {key: v[:64] for key, v in data.items()}
    with torch.no_grad():
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :vocab]
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :vocab]
    s_flat, flat = student_positions(s, batch, cfg.task)
    t_flat = student_positions(t, batch, cfg.task)[0]
    valid = flat["labels"] != -100
    s_flat, t_flat = s_flat[valid], t_flat[valid]
    out = {}
    for k in k_values:
        summary = summarize_teacher(t_flat, k, 32, torch.Generator().manual_seed(0))
        for temperature in (1.0, 2.0, 4.0):
            full = kd_full(s_flat, t_flat, temperature).mean().item()
            approx = kd_topk(s_flat, **summary, temperature=temperature).mean().item()
            out[f"k{k}_T{temperature:g}"] = {"full": full, "topk": approx, "rel_error": abs(approx - full) / full}
    return out


def quality(cfg, data, vocab, steps: int, source: str) -> dict:
    """Eval score/loss of a student trained ``steps`` steps from the cache (top-k) or full logits (online)."""
    from raykd.data.datasets import held_out_rows
    from raykd.data.tokens import load_tokenizer

    student, step, _ = trainee(cfg, vocab, source, steps)
    for batch in step_batches(data, cfg.distill.batch_size, steps):
        step(batch)
    rows, kind = held_out_rows(cfg.data.eval, cfg.data, cfg.task)
    return score_model(student, load_tokenizer(str(cfg.stage_dir("teacher"))), rows, cfg.data, cfg.task, kind)


def peak_memory_mb(n: int, vocab: int, k: int, mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(n), str(vocab), str(k), mode],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="runs/demo")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--quality-steps", type=int, default=150)
    ap.add_argument("--memory-tokens", type=int, default=8192)
    ap.add_argument("--out", default="bench/results/distill_cache.json")
    args = ap.parse_args()
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # held_out_rows uses Ray Data
    cfg = load_config(args.config, [f"run_dir={args.run_dir}"])
    run = Path(cfg.run_dir)
    manifest = CacheManifest.read(run / "teacher_cache")
    vocab = manifest.vocab_size
    data = cache_rows(run, args.rows)
    sources = ("cache", "online", "ce")
    for source in sources:  # warm-up: first epochs pay allocation and kernel selection
        epoch_seconds(cfg, data, vocab, source)
    seconds = {source: [] for source in sources}
    for _ in range(3):  # interleaved repeats: the machine's noise hits every source alike
        for source in sources:
            seconds[source].append(epoch_seconds(cfg, data, vocab, source))
    seconds = {source: float(np.median(times)) for source, times in seconds.items()}
    result = {
        "epoch_rows": len(data["input_ids"]),
        "epoch_s": seconds,
        "online_over_cached_epoch_time": seconds["online"] / seconds["cache"],
        "cached_kd_over_plain_ce_epoch_time": seconds["cache"] / seconds["ce"],
        "bytes_per_target_token": manifest.bytes / manifest.tokens,
        "full_fp32_bytes_per_token": 4 * vocab,
        "stored_bytes_per_position": (2 + (2 if manifest.indices_dtype == "int16" else 4))
        * (manifest.k + manifest.tail_samples) + 4 * len(manifest.tail_temperatures),
        "full_fp32_bytes_per_position_32k_vocab": 4 * 32000,
        "topk_vs_full_kl": topk_error(cfg, data, vocab),
        "quality": {s: quality(cfg, data, vocab, args.quality_steps, s) for s in ("cache", "online")},
        "peak_memory_mb_32k_vocab": {m: peak_memory_mb(args.memory_tokens, 32000, manifest.k, m)
                                     for m in ("chunked", "naive")},
        "memory_tokens": args.memory_tokens,
    }
    mem = result["peak_memory_mb_32k_vocab"]
    result["naive_over_chunked_memory"] = mem["naive"] / mem["chunked"] if mem["chunked"] > 0 else None
    ray.shutdown()
    print(json.dumps({k: v for k, v in result.items() if k != "topk_vs_full_kl"}, indent=1))
    errors = {k: round(v["rel_error"], 4) for k, v in result["topk_vs_full_kl"].items()}
    print("top-k vs full KL relative error:", errors)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, result)


if __name__ == "__main__":
    main()
