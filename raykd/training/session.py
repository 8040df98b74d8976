"""Where a training loop reports: a ``Session`` for a Ray Train worker group or a Ray Tune trial."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
import torch


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
