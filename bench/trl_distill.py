"""raykd's cached distillation vs TRL's GKDTrainer (the peer a user would pick), side by side in one run.

    pip install "trl==1.16.0"     # bench-only: never a raykd dependency, never in CI
    python bench/trl_distill.py --run-dir runs/demo [--steps 150] [--out bench/results/trl_distill.json]

Needs a run directory with RUN/teacher and RUN/teacher_cache (``raykd demo`` or finetune + cache).
Both distil the same fresh student (same seed) from the same teacher on the same rows (the cache's:
labeled rows and the teacher's completions of the unlabeled prompts), in the same batches, for the
same number of steps, and are scored on the same eval split:

* **raykd**: the distil job's loss and optimiser (``bench/distill_cache.py``'s ``trainee``) on the
  cached top-k logits, at the config's alpha and T, and at alpha = 1 (soft term only, TRL's objective);
* **TRL**: ``trl.experimental.gkd.GKDTrainer`` with ``lmbda=0`` (the dataset's completions, no
  student sampling: the same rows) and ``beta=0`` (forward KL(teacher || student), the soft term),
  at the same T; its teacher runs forward on every batch (TRL has no logit cache).

Reported: median step time of each and student quality after the steps, with ratios. Both in fp32
(TRL's bf16 default is far slower on a CPU without AMX).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from distill_cache import cache_rows, cached_run_arguments, step_batches, trainee  # noqa: E402  (sibling bench module)
from results_page import write_results  # noqa: E402  (sibling bench module)

from raykd.config import load_config  # noqa: E402
from raykd.data.datasets import held_out_rows  # noqa: E402
from raykd.data.tokens import load_tokenizer  # noqa: E402
from raykd.evaluation.scoring import score_model  # noqa: E402
from raykd.models.load import load_model  # noqa: E402
from raykd.models.student import build_student  # noqa: E402
from raykd.training.distill import TEACHER_COLUMNS  # noqa: E402


def evaluate(cfg, student) -> dict:
    rows, kind = held_out_rows(cfg.data.eval, cfg.data, cfg.task)
    tok = load_tokenizer(str(cfg.stage_dir("teacher")))
    scored = score_model(student, tok, rows, cfg.data, cfg.task, kind)
    return {"eval_score": scored["score"], "eval_loss": scored["loss"]}


def run_raykd(cfg, data, vocab, steps: int) -> dict:
    student, step, _ = trainee(cfg, vocab, "cache", steps)
    times = []
    for batch in step_batches(data, cfg.distill.batch_size, steps):
        start = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times), "alpha": cfg.distill.alpha, **evaluate(cfg, student)}


def run_trl(cfg, data, steps: int, out_dir: Path) -> dict:
    """GKDTrainer on the cache's token rows (its teacher columns dropped: TRL recomputes them)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.start = [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    columns = ("input_ids", "attention_mask", "labels")
    ordered = {c: torch.cat([b[c] for b in step_batches(data, cfg.distill.batch_size, steps)]) for c in columns}
    rows = Dataset.from_dict({c: ordered[c].tolist() for c in columns})
    torch.manual_seed(0)
    student = build_student(cfg)
    teacher = load_model(str(cfg.stage_dir("teacher")), cfg.task, 2).eval()
    d = cfg.distill
    args = GKDConfig(output_dir=str(out_dir), lmbda=0.0, beta=0.0, temperature=d.temperature, max_steps=steps,
                     per_device_train_batch_size=d.batch_size, learning_rate=d.lr, weight_decay=d.weight_decay,
                     warmup_steps=d.warmup_steps, lr_scheduler_type="cosine_with_min_lr",
                     lr_scheduler_kwargs={"min_lr_rate": 0.1}, max_grad_norm=1.0, gradient_checkpointing=False,
                     bf16=False,  # TRL defaults to bf16 autocast; raykd trains fp32 on CPUs (bf16 is slower here)
                     use_cpu=True,
                     report_to=[], save_strategy="no", logging_steps=max(1, steps // 5), disable_tqdm=True,
                     dataloader_drop_last=True, seed=cfg.seed)
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=rows,
                         processing_class=load_tokenizer(str(cfg.stage_dir("teacher"))),
                         data_collator=lambda feats: {c: torch.tensor([f[c] for f in feats]) for c in columns})
    # The rows in the given order, as raykd steps through them (Trainer would shuffle them).
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(rows)
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return {"step_s": statistics.median(timer.times), "beta": 0.0, **evaluate(cfg, student)}


def main() -> None:
    args = cached_run_arguments(__doc__, "bench/results/trl_distill.json").parse_args()
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # held_out_rows uses Ray Data
    cfg = load_config(args.config, [f"run_dir={args.run_dir}"])
    from raykd.cache.schema import CacheManifest

    vocab = CacheManifest.read(Path(cfg.run_dir) / "teacher_cache").vocab_size
    data = cache_rows(Path(cfg.run_dir), args.rows)
    soft_only = load_config(args.config, [f"run_dir={args.run_dir}", "distill.alpha=1.0"])
    result = {
        "steps": args.steps, "batch_size": cfg.distill.batch_size, "temperature": cfg.distill.temperature,
        "raykd_cached": run_raykd(cfg, data, vocab, args.steps),
        "raykd_cached_soft_only": run_raykd(soft_only, data, vocab, args.steps),
        "trl_gkd_online": run_trl(cfg, {k: v for k, v in data.items() if k not in TEACHER_COLUMNS}, args.steps,
                                  Path(cfg.run_dir) / "bench_trl"),
    }
    ray.shutdown()
    trl = result["trl_gkd_online"]["step_s"]
    result["trl_over_raykd_step_time"] = trl / result["raykd_cached"]["step_s"]
    result["trl_over_raykd_soft_only_step_time"] = trl / result["raykd_cached_soft_only"]["step_s"]
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, result)


if __name__ == "__main__":
    main()
