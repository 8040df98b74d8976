"""Which arm answers a request, and the per-arm figures the router keeps. Pure: no Ray."""

from __future__ import annotations

import hashlib
import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np


def choose_arm(model: str, user: str | None, arms: dict[str, float], alias: str, rng: random.Random) -> str:
    """The arm for ``model``: itself when it names an arm; for ``alias``, a weighted draw over
    ``arms`` (name → weight), the same arm for the same ``user`` every time (a hash, not the rng).
    Raises KeyError for any other name."""
    if model in arms:
        return model
    if model != alias:
        raise KeyError(model)
    point = (int(hashlib.sha256(user.encode()).hexdigest()[:15], 16) / 16**15) if user else rng.random()
    total = sum(arms.values())
    cumulative = 0.0
    for name, weight in arms.items():
        cumulative += weight / total
        if point < cumulative:
            return name
    return next(name for name, weight in reversed(arms.items()) if weight > 0)


def percentiles(values, qs=(50, 95, 99)) -> dict[str, float | None]:
    """``{"p50": …, …}`` of the values (None when there are none)."""
    return {f"p{q}": (float(np.percentile(list(values), q)) if len(values) else None) for q in qs}


@dataclass
class ArmStats:
    """Counters and the latest latencies (seconds) of one arm, as the router saw them."""

    requests: int = 0
    errors: int = 0
    completion_tokens: int = 0
    generation_s: float = 0.0
    latency: deque = field(default_factory=lambda: deque(maxlen=2000))
    ttft: deque = field(default_factory=lambda: deque(maxlen=2000))

    def record(self, latency: float, ttft: float, tokens: int) -> None:
        self.requests += 1
        self.completion_tokens += tokens
        self.generation_s += latency
        self.latency.append(latency)
        self.ttft.append(ttft)

    def summary(self) -> dict:
        return {"requests": self.requests, "errors": self.errors, "completion_tokens": self.completion_tokens,
                "tokens_per_s": self.completion_tokens / self.generation_s if self.generation_s else None,
                "latency_s": percentiles(self.latency), "ttft_s": percentiles(self.ttft)}


@dataclass
class ShadowStats:
    """Shadow mode: how often the shadow arm's answer equals the answering arm's."""

    compared: int = 0
    agreed: int = 0

    def record(self, primary: str, shadow: str) -> None:
        self.compared += 1
        self.agreed += primary.strip() == shadow.strip()

    def summary(self) -> dict:
        return {"compared": self.compared, "agreement": self.agreed / self.compared if self.compared else None}
