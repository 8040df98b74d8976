"""The step loop shared by fine-tune, distil and Tune trials: device, precision, optimizer, micro-batches,
gradient accumulation, periodic evaluation, checkpoints and resume."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

from raykd.config import TrainConfig
from raykd.training.checkpoints import LoopState, save_checkpoint
from raykd.training.session import Session


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
