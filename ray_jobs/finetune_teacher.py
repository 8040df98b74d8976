"""Stage 1: fine-tune the teacher as a Ray Train ``TorchTrainer`` job (LoRA or full; FSDP2, DDP or none).

    raykd finetune --config configs/demo.yaml finetune.workers=2 finetune.sharding=fsdp
    python -m ray_jobs.finetune_teacher --config configs/demo.yaml
    ray job submit --working-dir . -- python -m ray_jobs.finetune_teacher --config configs/llama70b_to_7b.yaml

Writes ``RUN/teacher/`` (HF directory, LoRA merged, adapter kept in ``adapter/``) and
``RUN/teacher/metrics.json``. Checkpoints go to ``RUN/checkpoints/<run name>``; running again with
the same run name resumes from the latest one, as does a worker-group restart after a failure.
"""

from __future__ import annotations

import time

import ray
import ray.train
import torch

from ray_jobs.config import RaykdConfig, from_dict
from ray_jobs.data import check_fields, read_dataset, tokenized_dataset
from ray_jobs.launch import parse_stage_args, run_stage, write_metrics
from ray_jobs.models import add_lora, load_model, resolve_tokenizer, save_model, shard_model
from ray_jobs.scoring import score_task
from ray_jobs.training import (
    build_from_latest,
    load_trainable,
    make_optimizer,
    micro_batches,
    restore_checkpoint,
    run_steps,
    train_session,
    trainer_for,
    worker_device,
)


def build_model(cfg: RaykdConfig, checkpoint_dir: str | None = None) -> torch.nn.Module:
    """The teacher as trained: base (+ LoRA), with the checkpoint's trainable weights if given."""
    torch.manual_seed(cfg.seed)  # same LoRA / head initialisation on every rank and in the export
    model = load_model(cfg.models.teacher, cfg.task, cfg.data.num_labels, cfg.models.trust_remote_code)
    if cfg.finetune.method == "lora":
        model = add_lora(model, cfg.finetune, cfg.task)
    if checkpoint_dir is not None:
        missing = set(load_trainable(checkpoint_dir)) - set(model.state_dict())
        if missing:
            raise ValueError(f"checkpoint has weights the model lacks: {sorted(missing)[:3]}")
        model.load_state_dict(load_trainable(checkpoint_dir), strict=False)
    return model


def task_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """HF loss of a batch: mean CE over label tokens (causal LM) or examples (classification)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss


def train_loop(config: dict) -> dict:
    """Per-worker loop: build, restore, shard, train to ``finetune.steps``, checkpointing."""
    cfg = from_dict(config["cfg"])
    session = train_session()
    device = worker_device(cfg.finetune, session)
    model = build_from_latest(lambda checkpoint_dir: build_model(cfg, checkpoint_dir), session)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    model = shard_model(model, cfg.finetune.sharding, device, session.world)
    optimizer, scheduler = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.finetune)
    state = restore_checkpoint(model, optimizer, session)
    if state.step and session.rank == 0:
        print(f"[finetune] resumed from checkpoint at step {state.step}", flush=True)
    batches = micro_batches(ray.train.get_dataset_shard("train"), cfg.finetune.batch_size)
    state = run_steps(model, optimizer, scheduler, batches, task_loss, cfg.finetune, state, trainable, device,
                      "finetune", session)
    return state.__dict__


@ray.remote
def export_task(cfg_dict: dict, checkpoint: ray.train.Checkpoint, out_dir: str) -> int:
    """Rebuild the trained teacher from a checkpoint, save it as an HF directory; returns its params."""
    cfg = from_dict(cfg_dict)
    with checkpoint.as_directory() as d:
        model = build_model(cfg, d)
    return save_model(model, resolve_tokenizer(cfg.models), out_dir, cfg.models.save_dtype,
                      cfg.models.trust_remote_code)


def eval_rows(cfg: RaykdConfig) -> tuple[list[dict], str]:
    """Held-out rows scored before and after training, and their kind."""
    ds = read_dataset(cfg.data.eval)
    kind = check_fields(ds, cfg.data.eval, cfg.data, cfg.task, labeled=True)
    return ds.take(cfg.data.eval_examples), kind


def run(cfg: RaykdConfig) -> dict:
    """Fine-tune the teacher and write ``RUN/teacher``; returns the metrics."""
    started = time.time()
    out = cfg.stage_dir("teacher")
    tokenizer = resolve_tokenizer(cfg.models)
    train = tokenized_dataset(cfg.data.train, cfg.data, cfg.task, tokenizer)
    rows, kind = eval_rows(cfg)
    cfg_dict = cfg.to_dict()
    base = score_task.remote(cfg_dict, cfg.models.teacher, tokenizer, rows, kind)
    result = trainer_for(cfg, cfg.finetune, "finetune", train_loop, {"train": train}).fit()
    loop = result.return_value
    params = ray.get(export_task.remote(cfg_dict, result.checkpoint, str(out)))
    final = ray.get(score_task.remote(cfg_dict, str(out), str(out), rows, kind))
    base = ray.get(base)
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
    print(f"[finetune] eval loss {base['loss']:.3f} -> {final['loss']:.3f}, "
          f"score {base['score']} -> {final['score']}; teacher saved to {out}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    cfg = parse_stage_args(argv, __doc__.splitlines()[0])
    run_stage(run, cfg)


if __name__ == "__main__":
    main()
