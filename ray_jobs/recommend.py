"""``raykd recommend``: fine-tune, distil, both, or only prompt? Answered from evidence when there is some.

    raykd recommend --pilot --config my.yaml [key=value ...]   # measure on a sample of your data, then answer
    raykd recommend --run-dir runs/demo                         # answer from a finished run's report
    raykd recommend --performance high --resources strict --labeled 200 --unlabeled 4000 --time-budget medium

With a run (``--run-dir``) or a pilot, the evidence rules decide from what was measured: the paired
interval of distilled student - labels-only student, retention with its interval, speed and size, and
what each stage cost. Without one, the prior rules answer from the counts. The table:
docs/recommend_rules.md. ``--pilot`` runs fine-tune, cache, distil and evaluate on a sample of the
config's rows with few steps (``pilot_config``), under ``RUN/pilot``; a re-run reuses what it finished.
Bad input exits 2 with one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ray_jobs import pipeline
from raykd.config import RaykdConfig, from_dict
from raykd.launch import fail, load_or_fail, run_stage
from raykd.recommend.answer import recommend, to_json, to_text
from raykd.recommend.evidence import read_evidence
from raykd.recommend.inputs import PERFORMANCE, RESOURCES, Inputs, RecommendError, parse_count, parse_time_budget

# The pilot's sample and budget: enough test rows for an interval of about +-0.1 on a score, enough
# training rows and steps for the distilled and the labels-only student to part, small enough to
# answer in minutes on 2 CPUs.
PILOT_LABELED = 200
PILOT_UNLABELED = 1000
PILOT_TEST = 100
PILOT_STEPS = {"finetune": 40, "distill": 60}
PILOT_STAGES = ("finetune", "cache", "distill", "evaluate")


def pilot_config(cfg: RaykdConfig) -> RaykdConfig:
    """``cfg`` scaled down: ``RUN/pilot``, the first rows of each source, fewer steps and test rows."""
    data = cfg.to_dict()
    data["run_dir"] = str(Path(cfg.run_dir) / "pilot")
    d = cfg.data
    data["data"] |= {"train_rows": min(d.train_rows or PILOT_LABELED, PILOT_LABELED),
                     "unlabeled_rows": min(d.unlabeled_rows or PILOT_UNLABELED, PILOT_UNLABELED),
                     "eval_examples": min(d.eval_examples, PILOT_TEST)}
    for stage, steps in PILOT_STEPS.items():
        section = data[stage]
        section["steps"] = min(section["steps"], steps)
        section["warmup_steps"] = min(section["warmup_steps"], section["steps"] // 4)
        section["checkpoint_every"] = min(section["checkpoint_every"], section["steps"])
    return from_dict(data)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block), exit 2, like every stage."""

    def error(self, message: str) -> None:
        fail(RecommendError(message))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="raykd recommend", description=__doc__.splitlines()[0],
                epilog="The rules: docs/recommend_rules.md; how they are used: docs/recommend.md.")
    p.add_argument("--performance", choices=PERFORMANCE, help="how close to the best quality the task must get "
                   "(default high); sets the retention bar a student must keep")
    p.add_argument("--resources", choices=RESOURCES, help="inference budget: strict (only a small model can "
                   "serve; the default), moderate (cost counts), relaxed (the big model can serve)")
    p.add_argument("--labeled", type=parse_count, help="labeled examples available (needed without evidence)")
    p.add_argument("--unlabeled", type=parse_count, help="unlabeled task inputs available (needed without evidence)")
    p.add_argument("--time-budget", type=parse_time_budget, default="medium",
                   help="low, medium (the default), high, or hours (< 24 low, < 168 medium, else high)")
    p.add_argument("--run-dir", help="answer from this run's measured report (raykd evaluate)")
    p.add_argument("--pilot", action="store_true", help="run a scaled-down pipeline on --config's data "
                   "under RUN/pilot and answer from what it measures")
    p.add_argument("--config", help="the YAML config to pilot (and to name in the commands to run next)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of --config (with --pilot)")
    return p


def inputs_of(args: argparse.Namespace, evidence: bool) -> tuple[Inputs, list[str]]:
    """The user's stated needs; the levels default to what makes distillation the question (a high bar, a
    small serving budget), said in a note; counts are required when nothing was measured."""
    notes = [f"assumed --{name} {default} (not given)" for name, default in (("performance", "high"),
             ("resources", "strict")) if getattr(args, name) is None]
    if not evidence and (args.labeled is None or args.unlabeled is None):
        raise RecommendError("--labeled and --unlabeled are needed without a run to weigh (or use --run-dir, "
                             "or --pilot --config FILE)")
    return Inputs(args.performance or "high", args.resources or "strict", args.labeled or 0, args.unlabeled or 0,
                  args.time_budget), notes


def run_pilot(cfg: RaykdConfig) -> str:
    """The pilot's stages under ``RUN/pilot``; returns that run directory."""
    pilot = pilot_config(cfg)
    print(f"[recommend] pilot: {pilot.data.train_rows} labeled and up to {pilot.data.unlabeled_rows} unlabeled "
          f"rows, {pilot.finetune.steps} fine-tune and {pilot.distill.steps} distillation steps, "
          f"{pilot.data.eval_examples} test rows, in {pilot.run_dir}", flush=True)
    pipeline.run(pilot, stages=PILOT_STAGES)
    return pilot.run_dir


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.pilot and args.run_dir:
            raise RecommendError("--pilot writes its own run (RUN/pilot): give --pilot or --run-dir, not both")
        if args.pilot and not args.config:
            raise RecommendError("--pilot needs --config FILE: the config whose data to sample")
        if args.overrides and not args.pilot:
            raise RecommendError(f"unexpected arguments {' '.join(args.overrides)} (key=value overrides go with "
                                 "--pilot --config FILE)")
        inputs, notes = inputs_of(args, evidence=bool(args.pilot or args.run_dir))
        run_dir = args.run_dir
        if args.pilot:
            cfg = load_or_fail(args.config, args.overrides)
            run_dir = run_stage("recommend", run_pilot, cfg)
        evidence = read_evidence(run_dir) if run_dir else None
        if evidence is not None and not evidence.scored and (args.labeled is None or args.unlabeled is None):
            raise RecommendError(f"{run_dir} has no task score (plain-text test data), so the counts decide: give "
                                 "--labeled and --unlabeled")
    except RecommendError as e:
        fail(e)
    rec = recommend(inputs, evidence, args.config)
    rec = dataclasses.replace(rec, warnings=rec.warnings + tuple(notes))
    print(json.dumps(to_json(inputs, rec)) if args.json else to_text(rec))


if __name__ == "__main__":
    main()
