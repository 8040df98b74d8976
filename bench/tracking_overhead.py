"""What experiment tracking costs a distillation run: the same distillation with ``tracking.backends``
empty, TensorBoard (the default) and TensorBoard + MLflow (a local SQLite store), side by side.

    python bench/tracking_overhead.py --run-dir runs/demo [--steps 150] [--repeats 2]

Needs a run directory with RUN/teacher and RUN/teacher_cache (``raykd demo``, or a pilot's
``RUN/pilot``). Each run is ``raykd distill`` in a fresh process on its own copy of the teacher and the
cache, the variants interleaved ``--repeats`` times (this machine is shared: a drift hits them all
alike). Reports each variant's median training-loop seconds (``train_s``: the steps, logging included)
and command wall time, and their ratios to the untracked run. Writes
``bench/results/tracking_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_page import write_results  # sibling bench module

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"none": "tracking.backends=[]", "tensorboard": "tracking.backends=[tensorboard]",
            "tensorboard_mlflow": "tracking.backends=[tensorboard,mlflow]"}


def distil(run: Path, scratch: Path, overrides: list[str]) -> dict:
    """``raykd distill`` on a fresh copy of ``run``'s teacher and cache: its train and wall seconds."""
    target = Path(tempfile.mkdtemp(dir=scratch))
    for stage in ("teacher", "teacher_cache"):
        shutil.copytree(run / stage, target / stage)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "raykd.cli", "distill", "--config", str(REPO / "configs" / "demo.yaml"),
                    f"run_dir={target}", *overrides], cwd=REPO, check=True, capture_output=True, timeout=900)
    wall = time.perf_counter() - started
    metrics = json.loads((target / "student" / "metrics.json").read_text())
    shutil.rmtree(target)
    return {"train_s": metrics["train_s"], "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="runs/demo")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "tracking_overhead.json"))
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="tracking-overhead-"))
    runs = {name: [] for name in VARIANTS}
    for repeat in range(args.repeats):
        for name, override in VARIANTS.items():
            runs[name].append(distil(Path(args.run_dir), scratch, [override, f"distill.steps={args.steps}"]))
            print(f"[bench] {name} #{repeat + 1}: {runs[name][-1]}", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    keys = ("train_s", "wall_s")
    median = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()}
    report = {"steps": args.steps, "repeats": args.repeats, "variants": {
        name: m | {f"{k}_over_none": m[k] / median["none"][k] for k in keys}
        for name, m in median.items()}}
    write_results(args.out, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
