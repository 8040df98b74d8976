"""The evaluation report: quality, size and speed of teacher, student and the no-teacher baseline,
measured side by side, written as JSON, Markdown and a chart."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import ray
import torch

from raykd.config import RaykdConfig, from_dict
from raykd.data.examples import prompt_ids, timing_prompt
from raykd.data.tokens import classification_ids, load_tokenizer
from raykd.evaluation.bootstrap import difference_interval, ratio_interval, score_interval
from raykd.evaluation.scoring import score_model
from raykd.evaluation.speed import compare_speed
from raykd.models.load import count_params, load_configured

ARMS = ("teacher", "student", "baseline")


def model_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


@ray.remote
def measure(cfg_dict: dict, dirs: dict[str, str], rows: list[dict], kind: str, engine: str) -> dict:
    """Quality, size and speed of every arm, in one worker so speeds are measured side by side; with
    ``engine="vllm"`` each arm runs on vLLM (``raykd.evaluation.vllm_scoring``)."""
    cfg = from_dict(cfg_dict)
    if engine == "vllm":
        from raykd.evaluation.vllm_scoring import measure_vllm

        return measure_vllm(cfg, dirs, rows, kind)
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    models = {arm: load_configured(d, cfg).eval() for arm, d in dirs.items()}
    tokenizer = load_tokenizer(dirs["teacher"], cfg.models.trust_remote_code)
    out = {arm: score_model(m, tokenizer, rows, cfg.data, cfg.task, kind, scorer=cfg.evaluate.scorer)
           | {"params": count_params(m)}
           for arm, m in models.items()}
    prompt = timing_prompt(rows[0], cfg.data, kind)
    ids = (prompt_ids(tokenizer, prompt, cfg.data.max_seq_len) if cfg.task == "causal_lm"
           else classification_ids(tokenizer, prompt, cfg.data.max_seq_len))
    speed = compare_speed({a: models[a] for a in ("teacher", "student")}, ids, cfg.task,
                          tokenizer.pad_token_id, new_tokens=cfg.data.max_new_tokens)
    for arm, figures in speed.items():
        out[arm] |= figures
    return out


def baseline_config(cfg: RaykdConfig) -> RaykdConfig:
    """The student trained the same number of steps on hard labels only, into ``RUN/baseline``."""
    data = cfg.to_dict()
    data["distill"] |= {"teacher_source": "none", "alpha": 0.0, "output": "baseline", "run_name": "baseline"}
    return from_dict(data)


def build_report(cfg: RaykdConfig, arms: dict[str, dict], dirs: dict[str, Path], test_examples: int,
                 draft: dict | None = None) -> dict:
    """report.json's content from the measured arms (adds bytes on disk and perplexity to each) and, for a
    causal LM, the drafts' quality (``raykd.evaluation.draft.measure_drafts``)."""
    for arm, m in arms.items():
        m["bytes"] = model_bytes(dirs[arm])
        if cfg.task == "causal_lm":
            m["perplexity"] = math.exp(m["loss"])
    t, s, b = arms["teacher"], arms["student"], arms["baseline"]
    scored = s["score"] is not None  # plain-text data has a loss and no score
    gain_ci = difference_interval(s["hits"], b["hits"], seed=cfg.seed) if scored else None
    retention_ci = ratio_interval(s["hits"], t["hits"], seed=cfg.seed) if scored else None
    for m in arms.values():  # per-example hits become each score's 95% interval
        hits = m.pop("hits", None)
        m["score_ci"] = score_interval(hits, seed=cfg.seed) if hits else None
    return {
        "teacher_score": t["score"], "student_score": s["score"], "baseline_score": b["score"],
        "teacher_loss": t["loss"], "student_loss": s["loss"], "baseline_loss": b["loss"],
        "retention": s["score"] / t["score"] if scored and t["score"] else None,  # None: no score, or a teacher at 0
        "retention_ci": retention_ci,
        "gain_over_baseline": s["score"] - b["score"] if scored else None, "gain_over_baseline_ci": gain_ci,
        "params_ratio": s["params"] / t["params"], "size_ratio": s["bytes"] / t["bytes"],
        "latency_speedup": t["latency_p50_s"] / s["latency_p50_s"],
        "throughput_speedup": s["throughput_per_s"] / t["throughput_per_s"],
        "test_examples": test_examples, "arms": arms, "distill": dataclasses.asdict(cfg.distill),
    } | ({"draft": draft} if draft else {})


def headline(report: dict) -> str:
    """One sentence: the score kept (or, on plain text, the held-out loss), size and speed."""
    if report["student_score"] is None:
        quality = (f"student test loss {report['student_loss']:.3f} vs the teacher's {report['teacher_loss']:.3f} "
                   f"(no-teacher baseline {report['baseline_loss']:.3f}; plain text has no score)")
    else:
        low, high = report["gain_over_baseline_ci"]
        kept = "n/a (the teacher scores 0)" if report["retention"] is None else f"{report['retention']:.0%}"
        quality = (f"student keeps {kept} of the teacher's score ({report['student_score']:.3f} vs "
                   f"{report['teacher_score']:.3f}; no-teacher baseline {report['baseline_score']:.3f}, "
                   f"student - baseline {report['gain_over_baseline']:+.3f}, "
                   f"95% CI [{low:+.3f}, {high:+.3f}])")
    return (f"{quality} with {report['params_ratio']:.1%} of its parameters, "
            f"{report['size_ratio']:.1%} of its bytes, {report['latency_speedup']:.1f}x faster at batch 1")


def draft_lines(draft: dict) -> list[str]:
    """report.md's section on the drafts: acceptance, greedy agreement, predicted accepted length and
    speedup at the best γ, and the student's gain in acceptance over its undistilled base."""
    gain = draft["student_minus_base"]
    lines = ["## As the teacher's speculative draft", "",
             f"Teacher-forced on {draft['tokens']:,} held-out label tokens. α: the chance a drafted token is "
             "accepted when sampling at temperature 1; greedy: the argmaxes agree (temperature 0). Predicted "
             "from α and the measured cost ratio (Leviathan et al. 2023).", "",
             "| draft | α [95% CI] | greedy agreement | cost ratio | best γ | tokens per teacher pass | "
             "predicted speedup |", "|---|---|---|---|---|---|---|"]
    for name, d in draft["drafts"].items():
        best = max(d["predicted_speedup"], key=d["predicted_speedup"].get)
        low, high = d["acceptance_ci"]
        lines.append(f"| {name} | {d['acceptance']:.3f} [{low:.3f}, {high:.3f}] | {d['greedy_agreement']:.3f} | "
                     f"{d['cost_ratio']:.2f} | {best} | {d['accepted_length'][best]:.2f} | "
                     f"{d['predicted_speedup'][best]:.2f}x |")
    lines += ["", f"Distillation's effect on α (student − base): {gain['difference']:+.3f}, "
                  f"95% CI [{gain['difference_ci'][0]:+.3f}, {gain['difference_ci'][1]:+.3f}]."]
    return lines


def write_report(out: Path, report: dict) -> None:
    """report.json, report.md (table + headline) and report.png (score, size, latency bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    arms = report["arms"]
    lines = ["# raykd report", "", headline(report), "",
             "| model | score [95% CI] | loss | params | bytes | p50 latency (s) | throughput (/s) |",
             "|---|---|---|---|---|---|---|"]
    for arm, m in arms.items():
        score = "n/a" if m["score"] is None else f"{m['score']:.3f} [{m['score_ci'][0]:.3f}, {m['score_ci'][1]:.3f}]"
        lines.append(f"| {arm} | {score} | {m['loss']:.3f} | {m['params']:,} | {m['bytes']:,} | "
                     f"{m.get('latency_p50_s', float('nan')):.4f} | {m.get('throughput_per_s', float('nan')):.0f} |")
    if report.get("draft"):
        lines += ["", *draft_lines(report["draft"])]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    quality = ("score", "test score") if report["student_score"] is not None else ("loss", "test loss")
    for ax, key, title in zip(axes, (quality[0], "params", "latency_p50_s"),
                              (quality[1], "parameters", "batch-1 latency p50 (s)")):
        names = [a for a in arms if key in arms[a]]
        ax.bar(names, [arms[a][key] for a in names], color=["#4c72b0", "#dd8452", "#55a868"][: len(names)])
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=100)
    plt.close(fig)
