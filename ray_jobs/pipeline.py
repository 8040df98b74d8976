"""All stages in one driver: fine-tune → cache → distil → evaluate → tune → serve + compare.

    raykd pipeline --config configs/demo.yaml [key=value ...]
    raykd demo [--run-dir DIR]          # the same on the embedded default (configs/demo.yaml)
    python -m ray_jobs.pipeline --config configs/demo.yaml
    ray job submit --working-dir . -- python -m ray_jobs.pipeline --config configs/llama70b_to_7b.yaml

The cache is handed to the distillation stage through the Ray object store (a detached actor owns
it); the Parquet copy under RUN/teacher_cache is the durable record.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ray_jobs import cache_teacher_logits, distill_student, evaluate, finetune_teacher
from raykd.config import ConfigError, RaykdConfig, load_config
from raykd.launch import fail, parse_stage_args, run_stage, write_metrics
from raykd.report import headline
from serving import compare
from tuning import sweep

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
STAGES = (("finetune", finetune_teacher.run), ("cache", cache_teacher_logits.run),
          ("distill", distill_student.run), ("evaluate", evaluate.run), ("tune", sweep.run),
          ("compare", compare.run))


def run(cfg: RaykdConfig) -> dict:
    """Run every stage in order; returns ``{stage: metrics}`` plus per-stage wall times."""
    results, times = {}, {}
    for name, stage in STAGES:
        started = time.time()
        print(f"\n=== raykd {name} ===", flush=True)
        results[name] = stage(cfg)
        times[name] = round(time.time() - started, 1)
    write_metrics(cfg.stage_dir("pipeline"), {"stage_seconds": times})
    tuned = results["tune"]
    print(f"\n=== done in {sum(times.values()):.0f}s ({times}) ===\n{headline(results['evaluate'])}\n"
          f"best sweep trial: temperature {tuned['best_temperature']:.3g}, alpha {tuned['best_alpha']:.3g} "
          f"(ranked by {tuned['metric']}: held-out score {tuned['best_score']}, loss {tuned['best_eval_loss']}) -> "
          f"{tuned['best_config']}\n"
          f"served student vs teacher p50 speedup by concurrency: {results['compare']['speedup_p50']}")
    return results


def main(argv: list[str] | None = None) -> None:
    cfg = parse_stage_args(argv, __doc__.splitlines()[0])
    run_stage(run, cfg)


def demo(argv: list[str] | None = None) -> None:
    """``raykd demo [--run-dir DIR] [key=value ...]``: the pipeline on configs/demo.yaml."""
    parser = argparse.ArgumentParser(description="the whole pipeline on the embedded default")
    parser.add_argument("--run-dir", default="runs/demo", help="where every stage writes (default runs/demo)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(DEMO_CONFIG, [f"run_dir={args.run_dir}", *args.overrides])
    except ConfigError as e:
        fail(e)
    run_stage(run, cfg)


if __name__ == "__main__":
    main()
