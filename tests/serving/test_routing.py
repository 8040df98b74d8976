"""The A/B split and the per-arm statistics: pure functions."""

import random
from collections import Counter

import pytest

from serving.routing import ArmStats, ShadowStats, choose_arm, percentiles

ARMS = {"teacher": 0.7, "student": 0.3}


def test_named_arm_is_used_as_is_and_unknown_names_raise():
    rng = random.Random(0)
    assert choose_arm("student", None, ARMS, "ab", rng) == "student"
    with pytest.raises(KeyError):
        choose_arm("gpt-4", None, ARMS, "ab", rng)


def test_alias_splits_by_weight():
    rng = random.Random(0)
    counts = Counter(choose_arm("ab", None, ARMS, "ab", rng) for _ in range(20000))
    assert abs(counts["student"] / 20000 - 0.3) < 0.015


def test_same_user_always_gets_the_same_arm_and_users_split_by_weight():
    rng = random.Random(0)
    first = {f"user-{i}": choose_arm("ab", f"user-{i}", ARMS, "ab", rng) for i in range(2000)}
    again = {u: choose_arm("ab", u, ARMS, "ab", random.Random(1)) for u in first}
    assert first == again
    assert abs(Counter(first.values())["student"] / 2000 - 0.3) < 0.04


@pytest.mark.parametrize("weights, expected", [({"teacher": 1.0, "student": 0.0}, "teacher"),
                                               ({"teacher": 0.0, "student": 1.0}, "student")])
def test_zero_weight_arm_never_gets_traffic(weights, expected):
    rng = random.Random(0)
    assert {choose_arm("ab", None, weights, "ab", rng) for _ in range(2000)} == {expected}


def test_stats_summaries():
    stats = ArmStats()
    for latency in (0.1, 0.2, 0.3, 0.4):
        stats.record(latency, latency / 2, tokens=10)
    summary = stats.summary()
    assert summary["requests"] == 4 and summary["completion_tokens"] == 40
    assert summary["tokens_per_s"] == pytest.approx(40 / 1.0)
    assert summary["latency_s"]["p50"] == pytest.approx(0.25)
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}
    shadow = ShadowStats()
    shadow.record(" a", "a "), shadow.record("a", "b")
    assert shadow.summary() == {"compared": 2, "agreement": 0.5}
