"""Leaf pieces shared by the training loops (fine-tune, distil, Tune trials): device, precision,
optimizer, checkpoints through a ``Session`` (Ray Train or Ray Tune) and the step loop with gradient
accumulation, periodic evaluation and resume."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from ray_jobs.config import RaykdConfig, TrainConfig

WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE = "trainable.safetensors", "optimizer.pt", "state.json"
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


@dataclass(frozen=True)
class Session:
    """Where a loop reports metrics and checkpoints: a Ray Train worker group or a Ray Tune trial.

    The two libraries have their own ``report``/``get_checkpoint`` (Tune refuses ``ray.train.report``),
    so loops take a session instead of calling either directly.
    """

    rank: int
    world: int
    device: torch.device
    report_fn: Callable[..., None]
    checkpoint_cls: type
    latest: Any  # the checkpoint to resume from, or None

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        checkpoint = self.checkpoint_cls.from_directory(checkpoint_dir) if checkpoint_dir else None
        self.report_fn(metrics, checkpoint=checkpoint)


def train_session() -> Session:
    """The session of a Ray Train worker (inside a ``TorchTrainer`` loop)."""
    from ray.train.torch import get_device

    ctx = ray.train.get_context()
    return Session(ctx.get_world_rank(), ctx.get_world_size(), get_device(), ray.train.report, ray.train.Checkpoint,
                   ray.train.get_checkpoint())


def tune_session() -> Session:
    """The session of a Ray Tune function trainable (one process, rank 0 of 1)."""
    from ray import tune

    device = torch.device("cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")
    return Session(0, 1, device, tune.report, tune.Checkpoint, tune.get_checkpoint())


def worker_device(cfg: TrainConfig, session: Session) -> torch.device:
    """This worker's device; on CPU, torch gets one thread per whole CPU the worker was given
    (Ray sets OMP_NUM_THREADS to 1 for fractional asks, which would idle a 2-CPU worker's second core)."""
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    return session.device


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether to autocast to bf16. 'auto' means CUDA with bf16 support: on CPUs without AMX we
    measured bf16 autocast *slower* than fp32 (see bench/finetune_throughput.py)."""
    if cfg.bf16 == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return cfg.bf16 == "on"


def make_optimizer(params, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with linear warm-up then cosine decay to 10% of the peak over ``cfg.steps``."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


@dataclass
class LoopState:
    """What a checkpoint carries besides weights, so a resumed run continues its record."""

    step: int = 0
    losses: list[float] = field(default_factory=list)  # one per logged step
    resumed_from: int = 0
    tokens: int = 0
    seconds: float = 0.0


def save_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, trainable: set[str],
                    state: LoopState, metrics: dict, session: Session) -> None:
    """Gather trainable weights and optimizer state (collective), write them on rank 0, report."""
    weights = {k: v.contiguous() for k, v in get_model_state_dict(model, options=_FULL).items() if k in trainable}
    optim = get_optimizer_state_dict(model, optimizer, options=_FULL)
    if session.rank != 0:
        session.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_file(weights, os.path.join(tmp, WEIGHTS_FILE))
        torch.save(optim, os.path.join(tmp, OPTIMIZER_FILE))
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump(state.__dict__, f)
        session.report(metrics, tmp)


def build_from_latest(build: Callable[[str | None], nn.Module], session: Session) -> nn.Module:
    """``build(checkpoint_dir)`` with the session's latest checkpoint (``None`` on a fresh start)."""
    if session.latest is None:
        return build(None)
    with session.latest.as_directory() as d:
        return build(d)


def load_trainable(checkpoint_dir: str) -> dict[str, torch.Tensor]:
    """The trainable weights a checkpoint holds (full, unsharded names)."""
    return load_file(os.path.join(checkpoint_dir, WEIGHTS_FILE))


def restore_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, session: Session) -> LoopState:
    """Load the optimizer state of the session's latest checkpoint (if any) and return its loop state.

    Weights are loaded before sharding (``load_trainable``), so only the optimizer is restored here.
    """
    if session.latest is None:
        return LoopState()
    with session.latest.as_directory() as d:
        optim = torch.load(os.path.join(d, OPTIMIZER_FILE), weights_only=True)
        set_optimizer_state_dict(model, optimizer, optim, options=StateDictOptions(full_state_dict=True))
        with open(os.path.join(d, STATE_FILE)) as f:
            state = LoopState(**json.load(f))
    state.resumed_from = state.step
    return state


def micro_batches(data, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless micro-batches, epoch after epoch, from a Train worker's shard
    (``ray.train.get_dataset_shard``) or a whole ``ray.data.Dataset`` (a Tune trial)."""
    while True:
        yield from data.iter_torch_batches(batch_size=batch_size, drop_last=True)


LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
EvalFn = Callable[[nn.Module, bool], dict]  # (model, final) -> held-out metrics added to a report


def run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, batches: Iterator[dict],
              loss_fn: LossFn, cfg: TrainConfig, state: LoopState, trainable: set[str], device: torch.device,
              tag: str, session: Session, evaluate: EvalFn | None = None) -> LoopState:
    """Train from ``state.step`` to ``cfg.steps``: accumulation, clipping, progress, checkpoints.

    ``loss_fn(model, batch) -> mean loss``; throughput counts non-padding input tokens. Every
    ``cfg.checkpoint_every`` steps (and at the end) the loop checkpoints and reports ``step``,
    ``loss`` and, when given, ``evaluate(model, final)``'s held-out metrics. Every rank runs the same
    number of steps, so collectives (FSDP, DDP, checkpoint gathers) line up.
    """
    rank, world = session.rank, session.world
    for _ in range(state.step):
        scheduler.step()  # the schedule is a function of the step: replay it instead of storing it
    bf16 = use_bf16(cfg, device)
    window_tokens, window_start = 0, time.time()
    while state.step < cfg.steps:
        model.train()
        total = 0.0
        for _ in range(cfg.grad_accum):
            batch = {k: v.to(device) for k, v in next(batches).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model, batch)
            (loss / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
            window_tokens += int(batch["attention_mask"].sum()) * world
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step(), scheduler.step(), optimizer.zero_grad(set_to_none=True)
        state.step += 1
        if state.step % cfg.log_every == 0 or state.step == 1 or state.step == cfg.steps:
            rate = window_tokens / max(1e-9, time.time() - window_start)
            state.losses.append(total)
            state.tokens += window_tokens
            state.seconds += time.time() - window_start
            if rank == 0:
                print(f"[{tag}] step {state.step}/{cfg.steps} loss {total:.4f} tokens/s {rate:.0f} "
                      f"lr {scheduler.get_last_lr()[0]:.2e}", flush=True)
            window_tokens, window_start = 0, time.time()
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            metrics = {"step": state.step, "loss": total}
            if evaluate is not None:
                metrics |= evaluate(model, state.step == cfg.steps)
            save_checkpoint(model, optimizer, trainable, state, metrics, session)
    return state


def trainer_for(cfg: RaykdConfig, stage: TrainConfig, name: str, loop, datasets: dict,
                extra: dict | None = None) -> TorchTrainer:
    """A TorchTrainer sized by the stage's config, checkpointing under ``RUN/checkpoints/<name>``."""
    use_gpu = stage.gpus_per_worker > 0
    resources = {"CPU": stage.cpus_per_worker} | ({"GPU": stage.gpus_per_worker} if use_gpu else {})
    return TorchTrainer(
        loop,
        train_loop_config={"cfg": cfg.to_dict()} | (extra or {}),
        scaling_config=ScalingConfig(num_workers=stage.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=stage.run_name or name,
            storage_path=str(cfg.stage_dir("checkpoints")),
            failure_config=FailureConfig(max_failures=stage.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets=datasets,
    )
