"""``raykd recommend --pilot`` on the embedded default, as a user runs it: its wall time, its answer,
and how much its sample can tell (the widths of its intervals).

    python bench/recommend_pilot.py [--config configs/demo.yaml]

One fresh process on a fresh run directory (nothing to reuse). Writes
``bench/results/recommend_pilot.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_page import write_results  # sibling bench module

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "recommend_pilot.json"))
    args = ap.parse_args()
    run = Path(tempfile.mkdtemp(prefix="pilot-"))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "raykd.cli", "recommend", "--pilot", "--config", args.config,
                           f"run_dir={run}", "--json"], cwd=REPO, check=True, capture_output=True, text=True,
                          timeout=1200)
    wall = time.perf_counter() - started
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    e = answer["evidence"]
    if e is None:
        raise SystemExit(f"the pilot's report has no task score: {answer}")
    report = {"wall_s": wall, "strategy": answer["strategy"], "rule": answer["rule"],
              "test_rows": e["test_examples"], "gain": e["gain"], "gain_ci": e["gain_ci"],
              "gain_ci_width": e["gain_ci"][1] - e["gain_ci"][0], "retention": e["retention"],
              "retention_ci": e["retention_ci"], "speedup": e["speedup"], "stage_costs_s": e["costs_s"],
              "teacher_rows": e["teacher_rows"]}
    shutil.rmtree(run, ignore_errors=True)
    write_results(args.out, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
