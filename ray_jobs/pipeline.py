"""All stages in one driver: fine-tune → cache → distil → evaluate → tune → serve + compare.

    raykd pipeline --config configs/demo.yaml [key=value ...] [--force STAGE]
    raykd demo [--run-dir DIR] [--force STAGE]    # the same on the embedded default (configs/demo.yaml)
    python -m ray_jobs.pipeline --config configs/demo.yaml
    ray job submit --working-dir . -- python -m ray_jobs.pipeline --config configs/llama70b_to_8b.yaml

A stage whose outputs exist and match the current config and its upstream outputs is skipped with
one line (``raykd.pipeline.state``), so a re-run after a crash or Ctrl-C continues at the first stage
not done; ``--force STAGE`` redoes that stage and every one after it. The terminal shows raykd's
progress lines; everything, Ray's output included, goes to ``RUN/logs/pipeline.log``. Ends with a
summary table, also written to ``RUN/summary.md``.

The cache is handed to the distillation stage through the Ray object store (a detached actor owns
it); the Parquet copy under RUN/teacher_cache is the durable record.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ray_jobs import cache_teacher_logits, distill_student, evaluate, finetune_teacher
from raykd.config import RaykdConfig, from_dict
from raykd.launch import config_parser, load_or_fail, run_stage
from raykd.pipeline.console import show
from raykd.pipeline.state import ORDER, forced, recorded_wall_s, stage_status, write_record
from raykd.pipeline.summary import headline, read_result, render, write_summary
from serving import compare
from tuning import sweep

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
RUNNERS = {"finetune": finetune_teacher.run, "cache": cache_teacher_logits.run, "distill": distill_student.run,
           "evaluate": evaluate.run, "tune": sweep.run, "compare": compare.run}


def redo_config(cfg: RaykdConfig, stage: str) -> RaykdConfig:
    """The config a forced stage runs with: a training run with unchanged inputs would resume its
    finished checkpoint, so it trains afresh under a new run name; the sweep starts over."""
    data, stamp = cfg.to_dict(), time.strftime("%Y%m%d-%H%M%S")
    if stage == "finetune":
        data["finetune"]["run_name"] = f"finetune-redo-{stamp}"
    elif stage == "distill":
        data["distill"]["run_name"] = f"distill-{cfg.distill.output}-redo-{stamp}"
    elif stage == "tune":
        data["tune"]["resume"] = False
    return from_dict(data)


def run(cfg: RaykdConfig, force: str | None = None, stages: tuple[str, ...] = ORDER) -> dict:
    """Run every one of ``stages`` not done (and ``force`` onwards), in order; returns
    ``{stage: headline}`` and writes ``RUN/summary.md``."""
    rows = []
    for name in stages:
        done, why = stage_status(cfg, name)
        if done and not forced(name, force):
            print(f"[pipeline] {name}: skipped, {why}", flush=True)
            rows.append((name, "skipped", recorded_wall_s(cfg, name), headline(name, read_result(cfg, name))))
            continue
        print(f"\n=== raykd {name} ({f'--force {force}' if forced(name, force) else why}) ===", flush=True)
        started = time.time()
        RUNNERS[name](redo_config(cfg, name) if forced(name, force) else cfg)
        wall = round(time.time() - started, 1)  # as recorded: a later run's summary of this stage shows the same
        write_record(cfg, name, wall)
        rows.append((name, "ran", wall, headline(name, read_result(cfg, name))))
        print(f"[pipeline] {name}: done in {wall:.0f}s", flush=True)
    summary = write_summary(cfg, rows)
    show(f"\n=== raykd pipeline: done ===\n{render(rows)}summary: {summary}")
    return {name: text for name, _, _, text in rows}


def parse_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", choices=ORDER, help="redo this stage and every stage after it")


def main(argv: list[str] | None = None) -> None:
    parser = config_parser(__doc__.splitlines()[0])
    parse_force(parser)
    args = parser.parse_args(argv)
    run_stage("pipeline", lambda c: run(c, args.force), load_or_fail(args.config, args.overrides))


def demo(argv: list[str] | None = None) -> None:
    """``raykd demo [--run-dir DIR] [--force STAGE] [key=value ...]``: the pipeline on configs/demo.yaml."""
    parser = config_parser("the whole pipeline on the embedded default", config=False)
    parser.add_argument("--run-dir", default="runs/demo", help="where every stage writes (default runs/demo)")
    parse_force(parser)
    args = parser.parse_args(argv)
    run_stage("pipeline", lambda c: run(c, args.force),
              load_or_fail(DEMO_CONFIG, [f"run_dir={args.run_dir}", *args.overrides]))


if __name__ == "__main__":
    main()
