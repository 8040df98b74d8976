"""The step loop shared by fine-tune, distil and Tune trials: device, precision, optimizer, micro-batches,
gradient accumulation, periodic evaluation, checkpoints and resume.

Averaging: a loss function returns the *sum* of its per-target losses and the target count; a step's
gradient is that sum over all micro-batches and ranks divided by the global target count, so every
token of the global batch weighs the same (a mean per micro-batch would over-weigh short ones).
Order: each epoch is shuffled with the run's seed; a resumed run skips the micro-batches it already
trained on, and every step seeds torch from (seed, step, rank), so dropout draws match a run that
never stopped.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from raykd.cache.targets import dense_torch_batch
from raykd.config import TrainConfig
from raykd.training.checkpoints import LoopState, save_checkpoint
from raykd.training.session import Session


def worker_device(cfg: TrainConfig, session: Session) -> torch.device:
    """This worker's device; on CPU, torch gets one thread per whole CPU the worker was given
    (Ray sets OMP_NUM_THREADS to 1 for fractional asks, which would idle a 2-CPU worker's second core)."""
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    return session.device


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether to autocast to bf16. 'auto' means CUDA with bf16 support only: on CPUs without AMX, bf16
    autocast does not beat fp32 (bench/finetune_throughput.py, docs/benchmarks.md)."""
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


SHUFFLE_ROWS = 512  # rows in each worker's shuffle buffer (a row's bytes: `raykd plan`, cache_bytes_per_row)


def micro_batches(data, batch_size: int, seed: int, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Endless micro-batches, epoch after epoch, each epoch shuffled with ``seed`` and its number, from
    a Train worker's shard (``ray.train.get_dataset_shard``) or a whole ``ray.data.Dataset`` (a Tune
    trial). The first ``skip`` micro-batches (a resumed run's) are read and dropped."""
    epoch = 0
    while True:
        for batch in data.iter_torch_batches(batch_size=batch_size, drop_last=True, collate_fn=dense_torch_batch,
                                             local_shuffle_buffer_size=SHUFFLE_ROWS,
                                             local_shuffle_seed=seed * 1000 + epoch):
            if skip:
                skip -= 1
                continue
            yield batch
        epoch += 1


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool):
    """Skip the gradient all-reduce (DDP) / reduce-scatter (FSDP2) of a micro-batch that is not the
    step's last: gradients accumulate locally and are synchronised once."""
    if enabled:
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # an FSDP2 (fully_shard) module
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def global_sums(values: list[float], world: int) -> list[float]:
    """``values`` summed over all ranks (one all-reduce; the identity on one process)."""
    if world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


# (model, batch) -> (summed loss, target count, {part: (summed value, targets it was taken on)}): the parts are
# distillation's soft and hard terms; every rank must report the same part names (they are all-reduced).
Parts = dict[str, tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor, Parts]]
EvalFn = Callable[[nn.Module, bool], dict]  # (model, final) -> held-out metrics added to a report


def accumulate_gradients(model: nn.Module, batches: list[dict], loss_fn: LossFn, world: int, bf16: bool
                         ) -> tuple[float, dict[str, float]]:
    """Leave in ``.grad`` the gradient of the per-target mean loss over ``batches`` on every rank (one
    optimizer step's micro-batches); gradients are synchronised once, after the last. Returns that mean
    and each reported part's mean over the targets it was taken on (a part taken on none is left out)."""
    loss_sum, targets, parts = 0.0, 0.0, {}
    for i, batch in enumerate(batches):
        device = next(iter(batch.values())).device.type
        with gradient_sync(model, i == len(batches) - 1), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            summed, count, summed_parts = loss_fn(model, batch)
            summed.backward()
        loss_sum, targets = loss_sum + summed.item(), targets + float(count)
        for name, (value, taken_on) in summed_parts.items():
            total, n = parts.get(name, (0.0, 0.0))
            parts[name] = (total + float(value), n + float(taken_on))
    names = sorted(parts)
    loss_sum, targets, *part_sums = global_sums([loss_sum, targets, *(x for n in names for x in parts[n])], world)
    # DDP/FSDP averaged the summed gradients over ranks: times world / global count = per-target mean.
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(world / max(targets, 1.0))
    means = {n: part_sums[2 * i] / part_sums[2 * i + 1] for i, n in enumerate(names) if part_sums[2 * i + 1]}
    return loss_sum / max(targets, 1.0), means


def as_float(norm: torch.Tensor) -> float:
    """A gradient norm as a number: a DTensor (FSDP2) is made whole first, a collective every rank joins;
    read only at the steps every rank logs, so the other steps skip that collective."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, data, loss_fn: LossFn,
              cfg: TrainConfig, state: LoopState, trainable: set[str], device: torch.device, tag: str,
              session: Session, seed: int, evaluate: EvalFn | None = None) -> LoopState:
    """Train from ``state.step`` to ``cfg.steps`` on ``data`` (see ``micro_batches``): accumulation,
    per-token averaging over the global batch, clipping, progress, checkpoints.

    ``loss_fn``: see ``LossFn``; throughput counts non-padding input tokens. Every ``cfg.log_every``
    steps rank 0 prints a progress line and logs the step's loss, its parts, learning rate, tokens/s and
    gradient norm to the session's tracker. Every ``cfg.checkpoint_every`` steps (and at the end) the
    loop checkpoints and reports ``step``, ``loss`` and, when given, ``evaluate(model, final)``'s held-out
    metrics. Every rank runs the same number of steps, so collectives (FSDP, DDP, checkpoint gathers) line up.
    """
    rank, world = session.rank, session.world
    for _ in range(state.step):
        scheduler.step()  # the schedule is a function of the step: replay it instead of storing it
    batches = micro_batches(data, cfg.batch_size, seed, skip=state.step * cfg.grad_accum)
    bf16 = use_bf16(cfg, device)
    window_tokens, window_start = 0, time.time()
    first_step, started = state.step, time.time()
    while state.step < cfg.steps:
        model.train()
        torch.manual_seed((seed * 1_000_003 + state.step) * 4099 + rank)
        step_batches = [{k: v.to(device) for k, v in next(batches).items()} for _ in range(cfg.grad_accum)]
        total, parts = accumulate_gradients(model, step_batches, loss_fn, world, bf16)
        window_tokens += sum(int(b["attention_mask"].sum()) for b in step_batches) * world
        norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the norm before clipping, unread here
        lr = scheduler.get_last_lr()[0]
        optimizer.step(), scheduler.step(), optimizer.zero_grad(set_to_none=True)
        state.step += 1
        if state.step % cfg.log_every == 0 or state.step == 1 or state.step == cfg.steps:
            rate = window_tokens / max(1e-9, time.time() - window_start)
            state.losses.append(total)
            state.tokens += window_tokens
            state.seconds += time.time() - window_start
            if rank == 0:
                eta = (time.time() - started) / (state.step - first_step) * (cfg.steps - state.step)
                print(f"[{tag}] step {state.step}/{cfg.steps} loss {total:.4f} tokens/s {rate:.0f} "
                      f"lr {lr:.2e} eta {eta:.0f}s", flush=True)
            figures = {"loss": total, **parts, "lr": lr, "tokens_per_s": rate, "grad_norm": as_float(norm)}
            session.log(figures, state.step, "train/")
            window_tokens, window_start = 0, time.time()
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            metrics = {"step": state.step, "loss": total}
            if evaluate is not None:
                metrics |= evaluate(model, state.step == cfg.steps)
            save_checkpoint(model, optimizer, trainable, state, metrics, session)
            session.log({k: v for k, v in metrics.items() if k not in ("step", "loss")}, state.step, "train/")
    session.close()
    return state
