"""Stage 5: teacher vs student vs a no-teacher baseline on the held-out test split, in one report.

    raykd evaluate --config configs/demo.yaml
    python -m ray_jobs.evaluate --config configs/demo.yaml

The baseline is the same student base trained for the same number of steps on ``data.train``'s hard
labels only (``distill.teacher_source=none``, alpha 0), so the report shows what distillation adds.
Writes ``RUN/report/report.json``, ``report.md`` and ``report.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import ray
import torch

from ray_jobs import distill_student
from ray_jobs.config import ConfigError, RaykdConfig, from_dict
from ray_jobs.data import cached_tokenizer, check_fields, encode_lm_row, read_dataset
from ray_jobs.launch import parse_stage_args, run_stage, write_metrics
from ray_jobs.models import count_params, load_model
from ray_jobs.scoring import score_model
from ray_jobs.speed import compare_speed

ARMS = ("teacher", "student", "baseline")


def model_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


@ray.remote
def measure(cfg_dict: dict, dirs: dict[str, str], rows: list[dict], kind: str) -> dict:
    """Quality, size and speed of every arm, in one worker so speeds are measured side by side."""
    cfg = from_dict(cfg_dict)
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    models = {arm: load_model(d, cfg.task, cfg.data.num_labels).eval() for arm, d in dirs.items()}
    tokenizer = cached_tokenizer(dirs["teacher"])
    out = {arm: score_model(m, tokenizer, rows, cfg.data, cfg.task, kind) | {"params": count_params(m)}
           for arm, m in models.items()}
    text = rows[0].get(cfg.data.prompt_field) or rows[0].get(cfg.data.text_field) or ""
    prompt_ids = encode_lm_row(tokenizer, str(text), None, cfg.data.max_seq_len)[0]
    speed = compare_speed({a: models[a] for a in ("teacher", "student")}, prompt_ids, cfg.task,
                          new_tokens=cfg.data.max_new_tokens)
    for arm, figures in speed.items():
        out[arm] |= figures
    return out


def baseline_config(cfg: RaykdConfig) -> RaykdConfig:
    """The student trained the same number of steps on hard labels only, into ``RUN/baseline``."""
    data = cfg.to_dict()
    data["distill"] |= {"teacher_source": "none", "alpha": 0.0, "output": "baseline", "run_name": "baseline"}
    return from_dict(data)


def headline(report: dict) -> str:
    return (f"student keeps {report['retention']:.0%} of the teacher's score "
            f"({report['student_score']:.3f} vs {report['teacher_score']:.3f}; no-teacher baseline "
            f"{report['baseline_score']:.3f}) with {report['params_ratio']:.1%} of its parameters, "
            f"{report['size_ratio']:.1%} of its bytes, {report['latency_speedup']:.1f}x faster at batch 1")


def write_report(out: Path, report: dict) -> None:
    """report.json, report.md (table + headline) and report.png (score, size, latency bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    arms = report["arms"]
    lines = ["# raykd report", "", headline(report), "",
             "| model | score | loss | params | bytes | p50 latency (s) | throughput (/s) |",
             "|---|---|---|---|---|---|---|"]
    for arm, m in arms.items():
        lines.append(f"| {arm} | {m['score']:.3f} | {m['loss']:.3f} | {m['params']:,} | {m['bytes']:,} | "
                     f"{m.get('latency_p50_s', float('nan')):.4f} | {m.get('throughput_per_s', float('nan')):.0f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, title in zip(axes, ("score", "params", "latency_p50_s"),
                              ("test score", "parameters", "batch-1 latency p50 (s)")):
        names = [a for a in arms if key in arms[a]]
        ax.bar(names, [arms[a][key] for a in names], color=["#4c72b0", "#dd8452", "#55a868"][: len(names)])
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=100)
    plt.close(fig)


def run(cfg: RaykdConfig) -> dict:
    """Train the baseline, measure the three arms, write the report; returns report.json's content."""
    started = time.time()
    dirs = {arm: cfg.stage_dir(arm) for arm in ARMS}
    for arm, stage in (("teacher", "finetune"), ("student", "distill")):
        if not (dirs[arm] / "config.json").exists():
            raise ConfigError(f"{dirs[arm]}: no {arm} model; run `raykd {stage}` first")
    distill_student.run(baseline_config(cfg))
    ds = read_dataset(cfg.data.test)
    kind = check_fields(ds, cfg.data.test, cfg.data, cfg.task, labeled=True)
    rows = ds.take(cfg.data.eval_examples)
    arms = ray.get(measure.options(num_cpus=1).remote(cfg.to_dict(), {a: str(d) for a, d in dirs.items()}, rows, kind))
    for arm, m in arms.items():
        m["bytes"] = model_bytes(dirs[arm])
        if cfg.task == "causal_lm":
            m["perplexity"] = math.exp(m["loss"])
    t, s, b = arms["teacher"], arms["student"], arms["baseline"]
    report = {
        "teacher_score": t["score"], "student_score": s["score"], "baseline_score": b["score"],
        "retention": s["score"] / t["score"] if t["score"] else float("nan"),
        "gain_over_baseline": s["score"] - b["score"],
        "params_ratio": s["params"] / t["params"], "size_ratio": s["bytes"] / t["bytes"],
        "latency_speedup": t["latency_p50_s"] / s["latency_p50_s"],
        "throughput_speedup": s["throughput_per_s"] / t["throughput_per_s"],
        "test_examples": len(rows), "arms": arms, "wall_s": time.time() - started,
        "distill": dataclasses.asdict(cfg.distill),
    }
    write_report(cfg.stage_dir("report"), report)
    write_metrics(cfg.stage_dir("report"), {k: v for k, v in report.items() if not isinstance(v, dict)})
    print(f"[evaluate] {headline(report)}\n[evaluate] report: {cfg.stage_dir('report') / 'report.md'}")
    return report


def main(argv: list[str] | None = None) -> None:
    cfg = parse_stage_args(argv, __doc__.splitlines()[0])
    run_stage(run, cfg)


if __name__ == "__main__":
    main()
