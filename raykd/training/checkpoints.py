"""Checkpoints of a training loop: trainable weights, optimizer state and loop state, through a ``Session``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from raykd.training.session import Session

WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE = "trainable.safetensors", "optimizer.pt", "state.json"
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


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
