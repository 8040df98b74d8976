"""Distillation objectives side by side in one run: each divergence off-policy (the cache) and on-policy
batches at fractions 0.5 and 1 — held-out score with its interval, step time, teacher passes.

    python bench/distill_objectives.py --run-dir runs/demo [--steps 150]

Needs a run directory with RUN/teacher and RUN/teacher_cache (``raykd demo`` or finetune + cache).
Each variant distils the same fresh student (same seed) from the same cached rows, in the same batches,
for the same number of steps, with the distil job's loss and optimiser (``bench/distill_cache.py``'s
``trainee``) at the config's alpha and T; only ``distill.loss`` / ``distill.jsd_beta`` /
``distill.on_policy_fraction`` differ. On-policy batches are scored by one teacher actor (the distil
job's pool, 0.5 CPU) on the same 2 CPUs, so their step time includes sampling and scoring. Scored on
the test split: exact match with a 95% bootstrap interval, and each variant minus off-policy forward
KL with a paired interval; step time is the mean over the steps (the same examples resampled for both). Writes
``bench/results/distill_objectives.json``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).parent))
from distill_cache import cache_rows, cached_run_arguments, step_batches, trainee  # noqa: E402  (sibling bench module)
from results_page import write_results  # noqa: E402  (sibling bench module)

from raykd.cache.schema import CacheManifest  # noqa: E402
from raykd.config import load_config  # noqa: E402
from raykd.data.datasets import held_out_rows  # noqa: E402
from raykd.data.tokens import load_tokenizer  # noqa: E402
from raykd.evaluation.bootstrap import difference_interval, score_interval  # noqa: E402
from raykd.evaluation.scoring import score_model  # noqa: E402
from raykd.training.on_policy import OnPolicyCounts, teacher_pool  # noqa: E402

VARIANTS = {"forward_kl": ["distill.loss=forward_kl"], "reverse_kl": ["distill.loss=reverse_kl"],
            **{f"jsd_{b}": ["distill.loss=jsd", f"distill.jsd_beta={b}"] for b in (0.1, 0.5, 0.9)},
            **{f"on_policy_{f}_{loss}": [f"distill.on_policy_fraction={f}", f"distill.loss={loss}"]
               for f in (0.5, 1.0) for loss in ("forward_kl", "reverse_kl")}}


def distil(cfg, data: dict, vocab: int, steps: int) -> tuple[dict, list[int]]:
    """Train a fresh student ``steps`` steps on the cached rows; its median step time, counts and test hits."""
    pool = teacher_pool(cfg, str(cfg.stage_dir("teacher"))) if cfg.distill.on_policy_fraction else []
    tokenizer = load_tokenizer(str(cfg.stage_dir("teacher")))
    student, step, on_policy = trainee(cfg, vocab, "cache", steps, pool)
    times = []
    for batch in step_batches(data, cfg.distill.batch_size, steps):
        started = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - started)
    for actor in pool:
        ray.kill(actor)
    counts = on_policy.counts if on_policy else OnPolicyCounts()
    rows, kind = held_out_rows(cfg.data.test, cfg.data, cfg.task)
    scored = score_model(student.eval(), tokenizer, rows, cfg.data, cfg.task, kind)
    # the mean: with a fraction of on-policy batches, step times are two populations (a median picks one)
    return {"step_s": statistics.mean(times), "test_score": scored["score"],
            "test_score_ci": score_interval(scored["hits"]), "teacher_passes": counts.teacher_passes,
            "on_policy_batches": counts.batches, "generated_tokens": counts.generated_tokens}, scored["hits"]


def main() -> None:
    args = cached_run_arguments(__doc__, "bench/results/distill_objectives.json").parse_args()
    # held_out_rows uses Ray Data; an on-policy variant's teacher actor takes 0.5 CPU
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    base = [f"run_dir={args.run_dir}"]
    vocab = CacheManifest.read(Path(args.run_dir) / "teacher_cache").vocab_size
    data = cache_rows(Path(args.run_dir), args.rows)
    results, hits = {}, {}
    for name, overrides in VARIANTS.items():
        cfg = load_config(args.config, base + overrides)
        results[name], hits[name] = distil(cfg, data, vocab, args.steps)
        r = results[name]
        print(f"[bench] {name}: test score {r['test_score']:.3f} {r['test_score_ci']}, step "
              f"{1000 * r['step_s']:.0f} ms, teacher passes {r['teacher_passes']}", flush=True)
    ray.shutdown()
    for name in VARIANTS:
        results[name]["minus_forward_kl_ci"] = difference_interval(hits[name], hits["forward_kl"])
        results[name]["step_time_over_forward_kl"] = results[name]["step_s"] / results["forward_kl"]["step_s"]
    cfg = load_config(args.config, base)
    report = {"steps": args.steps, "batch_size": cfg.distill.batch_size, "alpha": cfg.distill.alpha,
              "temperature": cfg.distill.temperature, "variants": results}
    print(json.dumps(report, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, report)


if __name__ == "__main__":
    main()
