"""Stage 1: fine-tune the teacher as a Ray Train ``TorchTrainer`` job (LoRA or full; FSDP2, DDP or none).

    raykd finetune --config configs/demo.yaml finetune.workers=2 finetune.sharding=fsdp
    python -m ray_jobs.finetune_teacher --config configs/demo.yaml
    ray job submit --working-dir . -- python -m ray_jobs.finetune_teacher --config configs/llama70b_to_8b.yaml

Writes ``RUN/teacher/`` (HF directory, LoRA merged, adapter kept in ``adapter/``) and
``RUN/teacher/metrics.json``. Checkpoints go to ``RUN/checkpoints/<run name>``; running again with
the same run name resumes from the latest one, as does a worker-group restart after a failure.
"""

from __future__ import annotations

import functools
import time

import ray
import ray.train
import torch

from raykd.config import RaykdConfig, from_dict
from raykd.data.datasets import held_out_rows, tokenized_dataset
from raykd.data.tokens import IGNORE_INDEX
from raykd.evaluation.scoring import score_task
from raykd.launch import parse_stage_args, run_stage, write_metrics
from raykd.models.export import export_checkpoint
from raykd.models.load import resolve_tokenizer
from raykd.models.sharded_load import training_model
from raykd.models.teacher import build_teacher, check_teacher
from raykd.pipeline.runs import finetune_inputs
from raykd.pipeline.state import STAGES
from raykd.training.checkpoints import restore_checkpoint
from raykd.training.loop import make_optimizer, run_steps, use_bf16, worker_device
from raykd.training.session import train_session
from raykd.training.trainer import tracked_fit, train_run_name


def task_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(summed CE, target count, no parts) of a batch: over label tokens (causal LM, shifted) or examples
    (classification). HF's loss is the mean over exactly those targets."""
    labels = batch["labels"]
    count = labels.numel() if labels.dim() == 1 else (labels[:, 1:] != IGNORE_INDEX).sum()
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    return loss * count, count, {}


def train_loop(config: dict) -> dict:
    """Per-worker loop: build, restore, shard, train to ``finetune.steps``, checkpointing."""
    cfg = from_dict(config["cfg"])
    session = train_session(config.get("tracker"))
    device = worker_device(cfg.finetune, session)
    model, trainable = training_model(functools.partial(build_teacher, cfg, None), cfg.models.teacher, cfg.finetune,
                                      device, session.rank, session.world, use_bf16(cfg.finetune, device), cfg.seed)
    optimizer, scheduler = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.finetune)
    state = restore_checkpoint(model, optimizer, trainable, session)
    if state.step and session.rank == 0:
        print(f"[finetune] resumed from checkpoint at step {state.step}", flush=True)
    state = run_steps(model, optimizer, scheduler, ray.train.get_dataset_shard("train"), task_loss, cfg.finetune,
                      state, trainable, device, "finetune", session, cfg.seed)
    return state.__dict__


def run(cfg: RaykdConfig) -> dict:
    """Fine-tune the teacher and write ``RUN/teacher``; returns the metrics."""
    started = time.time()
    out = cfg.stage_dir("teacher")
    tokenizer = resolve_tokenizer(cfg.models)
    train = tokenized_dataset(cfg.data.train, cfg.data, cfg.task, tokenizer,
                              trust_remote_code=cfg.models.trust_remote_code, rows=cfg.data.train_rows)
    rows, kind = held_out_rows(cfg.data.eval, cfg.data, cfg.task)
    cfg_dict = cfg.to_dict()
    base = score_task.remote(cfg_dict, cfg.models.teacher, tokenizer, rows, kind)
    name = train_run_name(cfg, cfg.finetune, "finetune", finetune_inputs(cfg, tokenizer))
    metrics = tracked_fit(cfg, "finetune", cfg.finetune, name, train_loop, {"train": train}, {},
                          lambda result: export_and_score(cfg, result, tokenizer, ray.get(base), rows, kind, started),
                          out)
    print(f"[finetune] eval loss {metrics['base_eval_loss']:.3f} -> {metrics['eval_loss']:.3f}, "
          f"score {metrics['base_eval_score']} -> {metrics['eval_score']}; teacher saved to {out}")
    return metrics


def export_and_score(cfg: RaykdConfig, result, tokenizer: str, base: dict, rows: list[dict], kind: str,
                     started: float) -> dict:
    """Export the trained teacher to ``RUN/teacher``, score it, write its ``metrics.json``; return the metrics."""
    out = cfg.stage_dir("teacher")
    loop = result.return_value
    params = export_checkpoint(functools.partial(build_teacher, cfg, None), cfg.models.teacher, result.checkpoint,
                               tokenizer, str(out), cfg.models, cfg.finetune)
    final = ray.get(score_task.remote(cfg.to_dict(), str(out), str(out), rows, kind))
    losses = loop["losses"]
    metrics = {
        "steps": loop["step"], "resumed_from_step": loop["resumed_from"],
        "train_loss_first": losses[0], "train_loss_last": losses[-1],
        "base_eval_loss": base["loss"], "base_eval_score": base["score"],
        "eval_loss": final["loss"], "eval_score": final["score"],
        "params": params, "tokens_per_s": loop["tokens"] / max(1e-9, loop["seconds"]),
        "workers": cfg.finetune.workers, "sharding": cfg.finetune.sharding, "method": cfg.finetune.method,
        "wall_s": time.time() - started,
    }
    write_metrics(out, metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    cfg = parse_stage_args(argv, __doc__.splitlines()[0], STAGES["finetune"].reads)
    run_stage("finetune", run, cfg, precheck=check_teacher)


if __name__ == "__main__":
    main()
