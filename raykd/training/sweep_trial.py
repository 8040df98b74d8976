"""What one point of the temperature x alpha sweep trains: a pure function of the config, shared by the
sweep (``tuning/``) and the capacity plan, so both size the same run."""

from __future__ import annotations

import copy

from raykd.config import TuneConfig

# Sampled key -> the distill knob it sets ("divergence": a trial's reported "loss" is its training loss).
KNOBS = {"temperature": "temperature", "alpha": "alpha", "lr": "lr", "divergence": "loss", "jsd_beta": "jsd_beta"}


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
