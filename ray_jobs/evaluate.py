"""Stage 5: teacher vs student vs a no-teacher baseline on the held-out test split, in one report.

    raykd evaluate --config configs/demo.yaml
    python -m ray_jobs.evaluate --config configs/demo.yaml
    ray job submit --working-dir . -- python -m ray_jobs.evaluate --config configs/llama70b_to_8b.yaml

The baseline is the same student base trained for the same number of steps on ``data.train``'s hard
labels only (``distill.teacher_source=none``, alpha 0: the distillation stage run with no teacher),
so the report shows what distillation adds. For a causal LM on the transformers engine the report also
rates the student, the baseline and the student's undistilled base as the teacher's speculative draft
(``raykd.evaluation.draft``). Writes ``RUN/report/report.json``, ``report.md`` and
``report.png``.
"""

from __future__ import annotations

import time

import ray

from ray_jobs import distill_student
from raykd.config import ConfigError, RaykdConfig
from raykd.data.datasets import held_out_rows
from raykd.evaluation.draft import measure_drafts
from raykd.evaluation.report import ARMS, baseline_config, build_report, headline, measure, write_report
from raykd.evaluation.scorers import load_scorer
from raykd.launch import parse_stage_args, run_stage, write_metrics
from raykd.pipeline.state import STAGES
from raykd.tracking.stage import record, stage_run, tracked
from raykd.vllm_support import resolve_engine


def run(cfg: RaykdConfig) -> dict:
    """Train the baseline, measure the three arms, write the report; returns report.json's content."""
    started = time.time()
    dirs = {arm: cfg.stage_dir(arm) for arm in ARMS}
    for arm, stage in (("teacher", "finetune"), ("student", "distill")):
        if not (dirs[arm] / "config.json").exists():
            raise ConfigError(f"{dirs[arm]}: no {arm} model; run `raykd {stage}` first")
    engine = resolve_engine(cfg.evaluate.engine, "evaluate.engine", generative=cfg.task == "causal_lm")
    load_scorer(cfg.evaluate.scorer)  # a scorer that cannot be found fails before the baseline trains
    distill_student.run(baseline_config(cfg))
    rows, kind = held_out_rows(cfg.data.test, cfg.data, cfg.task)
    print(f"[evaluate] scoring teacher, student and baseline on {len(rows)} rows with {engine}", flush=True)
    task = measure.options(num_cpus=cfg.evaluate.cpus, num_gpus=cfg.evaluate.gpus or None)
    arms = ray.get(task.remote(cfg.to_dict(), {a: str(d) for a, d in dirs.items()}, rows, kind, engine))
    draft = None
    if cfg.task == "causal_lm" and engine == "transformers":  # full logits of both models, in one process
        print("[evaluate] measuring student, baseline and the student's base as the teacher's draft", flush=True)
        cost_ratio = arms["student"]["latency_p50_s"] / arms["teacher"]["latency_p50_s"]
        drafts = measure_drafts.options(num_cpus=cfg.evaluate.cpus, num_gpus=cfg.evaluate.gpus or None)
        draft = ray.get(drafts.remote(cfg.to_dict(), {a: str(d) for a, d in dirs.items()}, rows, kind, cost_ratio))
    report = build_report(cfg, arms, dirs, len(rows), draft) | {"engine": engine, "wall_s": time.time() - started}
    out = cfg.stage_dir("report")
    write_report(out, report)
    write_metrics(out, {k: v for k, v in report.items() if not isinstance(v, dict)})
    with tracked(cfg, stage_run(cfg, "evaluate")) as tracker:  # the table: scores with intervals, sizes, speeds
        record(tracker, {k: v for k, v in report.items() if k != "distill"}, 0,
               files=tuple(out / f"report.{suffix}" for suffix in ("md", "png", "json")))
    print(f"[evaluate] {headline(report)}\n[evaluate] report: {out / 'report.md'}")
    return report


def main(argv: list[str] | None = None) -> None:
    cfg = parse_stage_args(argv, __doc__.splitlines()[0], STAGES["evaluate"].reads)
    run_stage("evaluate", run, cfg)


if __name__ == "__main__":
    main()
