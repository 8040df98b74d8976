"""The sweep's search space (what a sampled point means for a trial: ``raykd.training.sweep_trial``)."""

from __future__ import annotations

import math

from ray import tune

from raykd.config import DistillConfig, TuneConfig
from raykd.training.sweep_trial import KNOBS

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


def _holds(domain, value) -> bool:
    """Whether a searched knob's ``domain`` can yield ``value`` (a searcher refuses a point outside it)."""
    if isinstance(domain, tune.search.sample.Categorical):
        return value in domain.categories
    return domain.lower <= value <= domain.upper


def config_point(t: TuneConfig, distill: DistillConfig) -> dict | None:
    """The config's own distill knobs, as a point of the searched knobs (a fixed knob is the same in every
    trial): the sweep's first trial (Tune's ``points_to_evaluate``), so the sweep is measured against
    what it would replace. None when a value lies outside its search range or nothing is searched."""
    searched = {k: d for k, d in search_space(t).items() if isinstance(d, tune.search.sample.Domain)}
    point = {key: getattr(distill, KNOBS[key]) for key in searched}
    return point if point and all(_holds(searched[k], v) for k, v in point.items()) else None


def finite_loss(loss: float) -> float:
    """A diverged trial's loss as a large finite number, so the scheduler stops it rather than skip it."""
    return loss if math.isfinite(loss) else DIVERGED_LOSS
