"""Where a training loop reports: a ``Session`` for a Ray Train worker group or a Ray Tune trial."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
import torch

from raykd.tracking.runs import numeric
from raykd.tracking.tracker import Tracker


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
    tracker: Tracker | None = None  # rank 0's tracker run (a Tune trial's is logged by the sweep's callback)

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        checkpoint = self.checkpoint_cls.from_directory(checkpoint_dir) if checkpoint_dir else None
        self.report_fn(metrics, checkpoint=checkpoint)

    def log(self, metrics: dict, step: int, prefix: str = "") -> None:
        """Log the numbers in ``metrics`` at ``step`` to the tracker (rank 0 holds it)."""
        if self.tracker is not None:
            self.tracker.log_metrics(numeric(metrics, prefix), step)

    def close(self) -> None:
        """Flush and close the tracker; the driver marks the run finished."""
        if self.tracker is not None:
            self.tracker.close()


def train_session(tracker: Tracker | None = None) -> Session:
    """The session of a Ray Train worker (inside a ``TorchTrainer`` loop); rank 0 logs its curves to
    ``tracker`` (``Tracker.for_workers`` of the driver's)."""
    from ray.train.torch import get_device

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    return Session(rank, ctx.get_world_size(), get_device(), ray.train.report, ray.train.Checkpoint,
                   ray.train.get_checkpoint(), tracker if rank == 0 else None)


def tune_session() -> Session:
    """The session of a Ray Tune function trainable (one process, rank 0 of 1)."""
    from ray import tune

    device = torch.device("cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")
    return Session(0, 1, device, tune.report, tune.Checkpoint, tune.get_checkpoint())
