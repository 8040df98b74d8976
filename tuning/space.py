"""The sweep's search space and what a sampled point means for a trial: pure functions of the config."""

from __future__ import annotations

import copy
import math

from ray import tune

from raykd.config import TuneConfig

# Sampled key -> the distill knob it sets ("divergence": a trial's reported "loss" is its training loss).
KNOBS = {"temperature": "temperature", "alpha": "alpha", "lr": "lr", "divergence": "loss", "jsd_beta": "jsd_beta"}
DIVERGED_LOSS = 1e9  # reported instead of NaN/inf: ASHA compares finite numbers only


def _between(bounds: list[float], sampler):
    low, high = bounds
    return low if low == high else sampler(low, high)


def search_space(t: TuneConfig) -> dict:
    """Ray Tune ``param_space``: temperature log-uniform, alpha uniform; optionally lr (log-uniform), the
    divergence (a choice) and jsd_beta (uniform; it only changes the loss of jsd trials)."""
    space = {"temperature": _between(t.temperature, tune.loguniform), "alpha": _between(t.alpha, tune.uniform)}
    if t.lr:
        space["lr"] = _between(t.lr, tune.loguniform)
    if t.loss:
        space["divergence"] = t.loss[0] if len(t.loss) == 1 else tune.choice(t.loss)
    if t.jsd_beta:
        space["jsd_beta"] = _between(t.jsd_beta, tune.uniform)
    return space


def trial_config(base: dict, sampled: dict) -> dict:
    """The full config dict of one trial: ``base`` with the sampled distill knobs and the trial's
    budget (``tune.steps``, evaluated every ``tune.eval_every``) on ``tune.workers_per_trial`` processes
    sharing the trial's CPUs/GPUs (one process: no sharding)."""
    cfg = copy.deepcopy(base)
    distill, t = cfg["distill"], TuneConfig(**cfg["tune"])
    for key, value in sampled.items():
        distill[KNOBS[key]] = value
    workers = t.workers_per_trial
    distill |= {"steps": t.steps, "checkpoint_every": t.eval_every, "log_every": t.eval_every, "workers": workers,
                "sharding": distill["sharding"] if workers > 1 else "none",
                "cpus_per_worker": t.cpus_per_trial / workers, "gpus_per_worker": t.gpus_per_trial / workers}
    return cfg


def finite_loss(loss: float) -> float:
    """A diverged trial's loss as a large finite number, so the scheduler stops it rather than skip it."""
    return loss if math.isfinite(loss) else DIVERGED_LOSS
