"""The pipeline's closing summary: one row per stage (status, wall time, headline figures), printed
and written as ``RUN/summary.md``. Figures come from the stages' result files, so a stage skipped
on a re-run shows the same figures as when it ran."""

from __future__ import annotations

import json
from pathlib import Path

from raykd.config import RaykdConfig
from raykd.pipeline.state import STAGES, output_dir

SUMMARY_FILE = "summary.md"


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _interval(ci: list[float] | None, signed: bool = False) -> str:
    return "" if not ci else (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f" [{ci[0]:.3f}, {ci[1]:.3f}]")


def versus_sentence(metrics: dict) -> str:
    """The sweep's answer to "did tuning beat my config?" (``raykd tune``'s metrics), one sentence."""
    if "config_trial" not in metrics:
        return "the config's own point was not among the trials"
    m = metrics
    at = (f"{m['metric']} at step {m['compared_at_step']}: {m['best_value']:.4g} vs your config's "
          f"{m['config_value']:.4g}")
    if m["sweep_beat_config"]:
        return f"the best trial beats your config ({at})"
    return f"the sweep found nothing better than your config ({at}); keep it"


def headline(stage: str, result: dict) -> str:
    """The figures a user looks at first, from a stage's result file (``evaluate``: report.json)."""
    r = result
    if stage == "finetune":
        return (f"eval score {_score(r['base_eval_score'])} -> {_score(r['eval_score'])}, "
                f"loss {r['base_eval_loss']:.3f} -> {r['eval_loss']:.3f} ({r['steps']} steps)")
    if stage == "cache":
        return f"{r['rows']} rows, {r['tokens']} target tokens, top-{r['k']}, {r['bytes'] / 1e6:.1f} MB"
    if stage == "distill":
        return f"eval score {_score(r['eval_score'])}, loss {r['eval_loss']:.3f} ({r['steps']} steps)"
    if stage == "evaluate":
        arms = r["arms"]
        scores = ", ".join(f"{arm} {_score(arms[arm]['score'])}{_interval(arms[arm]['score_ci'])}"
                           for arm in ("teacher", "student", "baseline"))
        gain = "" if r["gain_over_baseline"] is None else (
            f"; student - baseline {r['gain_over_baseline']:+.3f}{_interval(r['gain_over_baseline_ci'], True)}")
        return f"test {scores}{gain}; {r['params_ratio']:.1%} params, {r['latency_speedup']:.1f}x at batch 1"
    if stage == "tune":
        return (f"best of {r['trials']} trials: T {r['best_temperature']:.3g}, alpha {r['best_alpha']:.3g}, "
                f"score {_score(r['best_score'])} (ranked by {r['metric']}); {versus_sentence(r)}")
    if stage == "compare":
        levels = sorted(r["speedup_p50"].items(), key=lambda item: int(item[0]))  # JSON made the levels strings
        return "served p50 speedup " + ", ".join(f"c{c} {v:.2f}x" for c, v in levels)
    raise ValueError(f"unknown stage {stage!r}")


def read_result(cfg: RaykdConfig, stage: str) -> dict:
    out = output_dir(cfg, stage)
    name = "report.json" if stage == "evaluate" else STAGES[stage].result_file
    return json.loads((out / name).read_text())


def render(rows: list[tuple[str, str, float, str]]) -> str:
    """Markdown table of ``(stage, status, wall seconds, headline)`` rows and the total time."""
    lines = ["| stage | this run | wall time (s) | headline |", "|---|---|---|---|"]
    lines += [f"| {stage} | {status} | {wall:.0f} | {text} |" for stage, status, wall, text in rows]
    ran = sum(wall for _, status, wall, _ in rows if status == "ran")
    lines += ["", f"Stages run this time: {ran:.0f} s."]
    return "\n".join(lines) + "\n"


def write_summary(cfg: RaykdConfig, rows: list[tuple[str, str, float, str]]) -> Path:
    path = Path(cfg.run_dir) / SUMMARY_FILE
    path.write_text(f"# raykd pipeline: {cfg.run_dir}\n\n" + render(rows))
    return path
