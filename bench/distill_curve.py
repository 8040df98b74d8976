"""Distillation's gain by amount of data, on the built-in task: the distilled student minus a
labels-only student, with paired 95% intervals, at several numbers of labels and of unlabeled prompts,
and what the teacher's pass over them costs. ``raykd recommend``'s prior rules are set from it.

    python bench/distill_curve.py [--labels 50 200 800] [--unlabeled 0 250 1000 4000] [--steps 150]

For each number of labels L the teacher (the built-in base, fine-tuned by the fine-tune job on the
first L labeled rows, the config's steps) caches its top-k logits twice with the cache job: on those
L rows, and on the first max(U) unlabeled prompts (whose replies it writes). For each number of
unlabeled prompts U a fresh student distils ``--steps`` steps from the L labeled rows plus the first
U unlabeled ones, shuffled together (the distil job's loss at the config's alpha and temperature),
and a labels-only student trains the same steps on the L rows (plain CE, ``bench/distill_cache.py``'s
``trainee``). All are scored on the test split; the teacher's pass is its measured forward seconds per
row times L + U. Writes ``bench/results/distill_curve.json`` and ``docs/distill_curve.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).parent))
from distill_cache import step_batches, trainee  # noqa: E402  (sibling bench module)
from results_page import write_results  # noqa: E402  (sibling bench module)

from ray_jobs import cache_teacher_logits, finetune_teacher  # noqa: E402
from raykd.builtin.data import generate_split  # noqa: E402
from raykd.cache.schema import SHARDS_DIR, CacheManifest  # noqa: E402
from raykd.cache.store import dense_rows  # noqa: E402
from raykd.config import RaykdConfig, load_config  # noqa: E402
from raykd.data.datasets import held_out_rows  # noqa: E402
from raykd.data.tokens import load_tokenizer  # noqa: E402
from raykd.evaluation.bootstrap import difference_interval, score_interval  # noqa: E402
from raykd.evaluation.scoring import score_model  # noqa: E402
from raykd.models.load import load_model, resolve_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PLOT = REPO / "docs" / "distill_curve.png"


def teacher_and_caches(config: str, run: Path, train: Path, labels: int, unlabeled: int) -> RaykdConfig:
    """Fine-tune the teacher on ``labels`` rows and cache it on them and on ``unlabeled`` prompts
    (``RUN/cache_labeled``, ``RUN/cache_unlabeled``); the run's config."""
    base = [f"run_dir={run}", f"data.train={train}", f"data.train_rows={labels}", "tracking.backends=[]",
            "cache.include_eval=false"]
    cfg = load_config(config, base)
    finetune_teacher.run(cfg)
    for part, flags in (("labeled", ["cache.include_unlabeled=false"]),
                        ("unlabeled", ["cache.include_train=false", f"data.unlabeled_rows={unlabeled}"])):
        cache_teacher_logits.run(load_config(config, base + flags))
        shutil.move(run / "teacher_cache", run / f"cache_{part}")
    return cfg


def cached(run: Path, part: str, rows: int | None = None) -> dict[str, torch.Tensor]:
    return {c: torch.as_tensor(v) for c, v in dense_rows(str(run / f"cache_{part}" / SHARDS_DIR), rows).items()}


def mixed(labeled: dict, unlabeled: dict | None) -> dict[str, torch.Tensor]:
    """Both parts' rows in one seeded shuffle (the student sees them interleaved, as the cache job's)."""
    data = labeled if unlabeled is None else {k: torch.cat([labeled[k], unlabeled[k]]) for k in labeled}
    order = torch.randperm(len(data["input_ids"]), generator=torch.Generator().manual_seed(0))
    return {k: v[order] for k, v in data.items()}


def trained_hits(cfg: RaykdConfig, data: dict, vocab: int, steps: int, source: str, test: tuple) -> list[int]:
    """A fresh student trained ``steps`` steps on ``data`` (``cache``: distilled; ``ce``: labels only);
    its per-row test hits."""
    student, step, _ = trainee(cfg, vocab, source, steps)
    for batch in step_batches(data, cfg.distill.batch_size, steps):
        step(batch)
    rows, kind, tokenizer = test
    return score_model(student.eval(), tokenizer, rows, cfg.data, cfg.task, kind)["hits"]


def one_label_count(args, root: Path, train: Path, labels: int, test: tuple) -> dict:
    run = root / f"labels-{labels}"
    cfg = teacher_and_caches(args.config, run, train, labels, max(args.unlabeled))
    rows, kind, tokenizer = test
    teacher = load_model(str(run / "teacher"), cfg.task, cfg.data.num_labels).eval()
    teacher_hits = score_model(teacher, tokenizer, rows, cfg.data, cfg.task, kind)["hits"]
    manifests = {p: CacheManifest.read(run / f"cache_{p}") for p in ("labeled", "unlabeled")}
    per_row_s = sum(m.teacher_forward_s for m in manifests.values()) / sum(m.rows for m in manifests.values())
    vocab, labeled = manifests["labeled"].vocab_size, cached(run, "labeled")
    baseline = trained_hits(cfg, labeled, vocab, args.steps, "ce", test)
    finetune_s = json.loads((run / "teacher" / "metrics.json").read_text())["wall_s"]
    out = {"teacher_score": sum(teacher_hits) / len(rows), "teacher_score_ci": score_interval(teacher_hits),
           "finetune_s": finetune_s, "baseline_score": sum(baseline) / len(rows),
           "baseline_score_ci": score_interval(baseline), "unlabeled": {}}
    for u in args.unlabeled:
        data = mixed(labeled, cached(run, "unlabeled", u) if u else None)
        hits = trained_hits(cfg, data, vocab, args.steps, "cache", test)
        cell = {"student_score": sum(hits) / len(rows), "student_score_ci": score_interval(hits),
                "gain": (sum(hits) - sum(baseline)) / len(rows), "gain_ci": difference_interval(hits, baseline),
                "teacher_pass_s": per_row_s * (labels + u)}
        out["unlabeled"][str(u)] = cell
        print(f"[bench] labels {labels}, unlabeled {u}: student {cell['student_score']:.3f}, labels-only "
              f"{out['baseline_score']:.3f}, gain {cell['gain']:+.3f} [{cell['gain_ci'][0]:+.3f}, "
              f"{cell['gain_ci'][1]:+.3f}], teacher pass {cell['teacher_pass_s']:.0f} s", flush=True)
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for labels, r in report["labels"].items():
        us = sorted(r["unlabeled"], key=int)
        gains = [r["unlabeled"][u]["gain"] for u in us]
        errs = [[g - r["unlabeled"][u]["gain_ci"][0] for u, g in zip(us, gains)],
                [r["unlabeled"][u]["gain_ci"][1] - g for u, g in zip(us, gains)]]
        ax.errorbar([int(u) + int(labels) for u in us], gains, yerr=errs, marker="o", capsize=3,
                    label=f"{labels} labels")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="inputs the teacher scored (labels + unlabeled prompts)",
           ylabel="distilled - labels-only (test score)",
           title=f"Distillation's gain on the built-in task ({report['steps']} steps)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    ap.add_argument("--labels", type=int, nargs="+", default=[50, 200, 800])
    ap.add_argument("--unlabeled", type=int, nargs="+", default=[0, 250, 1000, 4000])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "distill_curve.json"))
    args = ap.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="distill-curve-"))
    train = root / "train.jsonl"  # more labeled rows than the built-in split holds, generated the same way
    train.write_text("".join(json.dumps(r) + "\n" for r in generate_split("train", max(args.labels))))
    cfg = load_config(args.config, [f"run_dir={root}"])
    rows, kind = held_out_rows(cfg.data.test, cfg.data, cfg.task)
    test = (rows, kind, load_tokenizer(resolve_tokenizer(cfg.models)))
    report = {"steps": args.steps, "alpha": cfg.distill.alpha, "temperature": cfg.distill.temperature,
              "test_rows": len(rows), "finetune_steps": cfg.finetune.steps,
              "labels": {str(n): one_label_count(args, root, train, n, test) for n in args.labels}}
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)
    plot(report, PLOT)
    write_results(args.out, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
