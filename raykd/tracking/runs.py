"""What a tracker run is: its identity (stable across re-runs, so a resumed stage continues its run), its
tags and the parameters it records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from raykd.pipeline.runs import fingerprint

PARAM_CHARS = 500  # a parameter's value is cut to this length (MLflow refuses long ones)


@dataclasses.dataclass(frozen=True)
class TrackedRun:
    """One tracker run: a stage's run in a run directory, or one trial of a sweep (``parent``: the sweep's
    name). ``name`` is stable across re-runs of the same inputs (a training run's Ray Train name, or a
    stage's fingerprint), so every backend finds the run again by ``key`` and continues it."""

    stage: str  # finetune, distill, cache, evaluate, tune, compare
    name: str  # e.g. distill-student-3f2a9c01de
    run_dir: str
    out_dir: str  # RUN/<stage's output>: TensorBoard files go in its tensorboard/ folder
    parent: str | None = None

    @property
    def key(self) -> str:
        """What names this run in every backend (a tag in MLflow, the run id in W&B)."""
        return fingerprint({"run_dir": self.run_dir, "name": self.name, "parent": self.parent})

    @property
    def tensorboard_dir(self) -> Path:
        """``RUN/<stage>/tensorboard/<name>`` (a trial's under its sweep's folder)."""
        root = Path(self.out_dir) / "tensorboard"
        return root / self.parent / self.name if self.parent else root / self.name

    @property
    def parent_key(self) -> str | None:
        if self.parent is None:
            return None
        return dataclasses.replace(self, name=self.parent, parent=None).key

    def tags(self, extra: list[str]) -> dict[str, str]:
        """raykd's own tags (stage, run name, run directory) plus the configured ``key=value`` ones."""
        own = {"raykd.stage": self.stage, "raykd.run": self.name, "raykd.run_dir": self.run_dir,
               "raykd.key": self.key}
        return own | dict(tag.split("=", 1) for tag in extra)


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A config dict as ``{dotted key: value as text}`` (lists as JSON), each value cut to PARAM_CHARS."""
    params = {}
    for key, value in config.items():
        if isinstance(value, dict):
            params |= flat_params(value, f"{prefix}{key}.")
        else:
            text = json.dumps(value) if isinstance(value, list) else str(value)
            params[prefix + key] = text[:PARAM_CHARS]
    return params


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numeric(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numbers in a (nested) metrics dict, as ``{prefix + key/sub: float}`` (NaN and infinities kept:
    a diverging loss shows); an interval (a ``*_ci`` key: ``[low, high]``) as ``key_low`` and
    ``key_high``. Booleans, text and other lists are left out (a tracker plots numbers)."""
    out = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= numeric(value, name + "/")
        elif _number(value):
            out[name] = float(value)
        elif str(key).endswith("_ci") and isinstance(value, (list, tuple)) and len(value) == 2:
            out[name + "_low"], out[name + "_high"] = map(float, value)
    return out
