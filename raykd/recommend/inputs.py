"""What a user states before training: quality need, serving constraint, data, time; checked once."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

PERFORMANCE = ("low", "medium", "high")
RESOURCES = ("strict", "moderate", "relaxed")
TIME_LEVELS = ("low", "medium", "high")
# Hours -> time level. A day fits one training run and its evaluation; the two-stage pipeline
# (teacher fine-tune, a teacher pass over the inputs, student training, evaluation and a retry)
# needs days at production scale (a 70B teacher), and a week also fits a knob sweep.
SHORT_TIME_HOURS = 24.0
LONG_TIME_HOURS = 168.0


class RecommendError(ValueError):
    """Bad input to ``raykd recommend``: the message is one line naming it."""


@dataclass(frozen=True)
class Inputs:
    """The user's needs and data. ``labeled``/``unlabeled`` are examples available (a run's or a
    pilot's evidence may stand in for them)."""

    performance: str  # low | medium | high: how close to the best model the task must get
    resources: str  # strict | moderate | relaxed: memory / latency / cost budget at inference
    labeled: int
    unlabeled: int
    time_budget: str  # low | medium | high (see parse_time_budget)

    def __post_init__(self) -> None:
        for name, value, allowed in (("performance", self.performance, PERFORMANCE),
                                     ("resources", self.resources, RESOURCES),
                                     ("time_budget", self.time_budget, TIME_LEVELS)):
            if value not in allowed:
                raise RecommendError(f"{name}: unknown level {value!r} (choose from {', '.join(allowed)})")
        for name, count in (("labeled", self.labeled), ("unlabeled", self.unlabeled)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise RecommendError(f"{name}: expected a whole number of examples >= 0, got {count!r}")


def parse_time_budget(text: str) -> str:
    """``low``/``medium``/``high``, or hours (> 0) mapped by ``SHORT_TIME_HOURS`` / ``LONG_TIME_HOURS``."""
    if text in TIME_LEVELS:
        return text
    try:
        hours = float(text)
    except ValueError:
        hours = math.nan
    if not math.isfinite(hours) or hours <= 0:
        raise argparse.ArgumentTypeError(f"expected low, medium, high or a number of hours > 0, got {text!r}")
    return "low" if hours < SHORT_TIME_HOURS else "medium" if hours < LONG_TIME_HOURS else "high"


def parse_count(text: str) -> int:
    """A number of examples: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of examples >= 0, got {text!r}")
    return value
