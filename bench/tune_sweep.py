"""A Ray Tune sweep on the teacher-logit cache vs the same sweep with the teacher online in every
trial, side by side in one Ray session.

    python bench/tune_sweep.py --run-dir runs/demo [--trials 4] [--steps 60] [--out bench/results/tune_sweep.json]

Needs a run directory with RUN/teacher and RUN/teacher_cache (``raykd demo`` or finetune + cache).
Both sweeps run ``tuning.sweep.run`` with the same seed, search space and budget, early stopping off
(grace period = steps) so both do the same training work; each works in its own copy of the run
directory. Reports wall time per sweep, the online/cached ratio and each sweep's teacher forward passes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from results_page import write_results  # sibling bench module

from raykd.config import load_config
from raykd.launch import init_ray
from tuning import sweep

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def timed_sweep(run: Path, scratch: Path, source: str, trials: int, steps: int) -> dict:
    """Copy the teacher and its cache into ``scratch/source`` and sweep there; returns its figures."""
    target = scratch / source
    for stage in ("teacher", "teacher_cache"):
        shutil.copytree(run / stage, target / stage)
    cfg = load_config(DEMO, [f"run_dir={target}", f"distill.teacher_source={source}", f"tune.num_samples={trials}",
                             f"tune.steps={steps}", f"tune.grace_period={steps}", f"tune.eval_every={steps // 3}"])
    started = time.perf_counter()
    metrics = sweep.run(cfg)
    return {"wall_s": time.perf_counter() - started, "teacher_forward_passes": metrics["teacher_forward_passes"],
            "best_eval_loss": metrics["best_eval_loss"], "trials": metrics["trials"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("bench/results/tune_sweep.json"))
    args = parser.parse_args()
    init_ray()
    with tempfile.TemporaryDirectory() as scratch:
        results = {source: timed_sweep(args.run_dir, Path(scratch), source, args.trials, args.steps)
                   for source in ("cache", "online")}
    report = {"trials": args.trials, "steps_per_trial": args.steps, "sweeps": results,
              "online_over_cached_wall": results["online"]["wall_s"] / results["cache"]["wall_s"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, report)
    print(f"\n{args.trials} trials x {args.steps} steps: cached {results['cache']['wall_s']:.1f}s "
          f"({results['cache']['teacher_forward_passes']} teacher forwards) vs online "
          f"{results['online']['wall_s']:.1f}s ({results['online']['teacher_forward_passes']} teacher forwards): "
          f"online/cached = {report['online_over_cached_wall']:.2f}x -> {args.out}")


if __name__ == "__main__":
    main()
