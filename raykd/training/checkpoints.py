"""Checkpoints of a training loop in ``torch.distributed.checkpoint`` (DCP) format, through a ``Session``.

Each rank writes its own shards of the trainable weights and of the optimizer state; frozen base
weights are never written (a LoRA checkpoint of a 70B teacher is megabytes, not 140 GB). Rank 0 adds
DCP's ``.metadata`` and the loop state. Every rank reports its directory; Ray Train merges them into one
checkpoint and registers it only after every rank has reported, so a half-written checkpoint is never
the latest. DCP reshards on load: a run checkpointed on N workers resumes on M.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

if TYPE_CHECKING:  # Ray is imported by the session only: this module runs where Ray is not installed
    from raykd.training.session import Session

STATE_FILE = "state.json"
MODEL_KEY, OPTIM_KEY = "model", "optim"  # top-level keys of the DCP state dict
TMP_PREFIX = "raykd-checkpoint-"  # + "<pid>-": a rank's local copy of its shards until Ray has stored them


@dataclass
class LoopState:
    """What a checkpoint carries besides weights, so a resumed run continues its record."""

    step: int = 0
    losses: list[float] = field(default_factory=list)  # one per logged step
    resumed_from: int = 0
    tokens: int = 0
    seconds: float = 0.0


def _distributed() -> bool:
    """Whether this process is one rank of a group (a Train worker) rather than alone (a Tune trial)."""
    return dist.is_available() and dist.is_initialized()


def trainable_state(model: nn.Module, trainable: set[str]) -> dict[str, torch.Tensor]:
    """This rank's view of the trainable weights, by their unwrapped names: DTensor shards under FSDP2,
    whole tensors otherwise (DCP writes a replicated tensor once)."""
    return {k: v for k, v in get_model_state_dict(model).items() if k in trainable}


def save_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, trainable: set[str],
                    state: LoopState, metrics: dict, session: Session) -> None:
    """Write this rank's shards of the trainable weights and optimizer state (collective), and report."""
    state_dict = {MODEL_KEY: trainable_state(model, trainable), OPTIM_KEY: get_optimizer_state_dict(model, optimizer)}
    remove_stale_tmpdirs()
    with tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{os.getpid()}-") as tmp:
        dcp.save(state_dict, checkpoint_id=tmp, no_dist=not _distributed())
        if session.rank == 0:
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump(state.__dict__, f)
        session.report(metrics, tmp)


def remove_stale_tmpdirs(root: str | None = None) -> list[str]:
    """Delete the local checkpoint copies left in ``root`` (the temp dir) by workers that died while
    writing one (a SIGKILL skips the ``TemporaryDirectory`` cleanup: a full fine-tune's rank leaves tens of
    GB). A directory's name carries its writer's pid; a live writer's is kept. Returns those deleted."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{TMP_PREFIX}*-*"):
        pid = path.name[len(TMP_PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def restore_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, trainable: set[str],
                       session: Session) -> LoopState:
    """Load the session's latest checkpoint (if any) into the sharded or whole ``model`` and ``optimizer``,
    resharded to this run's world size; return its loop state (a fresh one without a checkpoint)."""
    if session.latest is None:
        return LoopState()
    with session.latest.as_directory() as d:
        state_dict = {MODEL_KEY: trainable_state(model, trainable),
                      OPTIM_KEY: get_optimizer_state_dict(model, optimizer)}
        dcp.load(state_dict, checkpoint_id=d, no_dist=not _distributed())
        set_model_state_dict(model, state_dict[MODEL_KEY], options=StateDictOptions(strict=False))
        set_optimizer_state_dict(model, optimizer, state_dict[OPTIM_KEY])
        with open(os.path.join(d, STATE_FILE)) as f:
            state = LoopState(**json.load(f))
    state.resumed_from = state.step
    return state


def checkpoint_weight_names(checkpoint_dir: str) -> set[str]:
    """The names of the weights a checkpoint holds (its trainable ones)."""
    metadata = dcp.FileSystemReader(checkpoint_dir).read_metadata()
    prefix = MODEL_KEY + "."
    return {k[len(prefix):] for k in metadata.state_dict_metadata if k.startswith(prefix)}


def load_trainable(model: nn.Module, checkpoint_dir: str) -> None:
    """Load a checkpoint's trained weights, whole, into an unsharded ``model`` in one process (an export
    or a model rebuilt for scoring); every other weight stays as built. A checkpoint of another
    architecture is an error naming the weights this model lacks."""
    names = checkpoint_weight_names(checkpoint_dir)
    own = model.state_dict()
    missing = sorted(names - set(own))
    if missing:
        raise ValueError(f"{checkpoint_dir}: checkpoint has weights the model lacks: {missing[:3]}")
    weights = {k: own[k] for k in names}
    dcp.load({MODEL_KEY: weights}, checkpoint_id=checkpoint_dir, no_dist=True)
    model.load_state_dict(weights, strict=False)
