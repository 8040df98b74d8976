"""Bootstrap intervals of scores and paired differences, by their properties."""

import math

import pytest

from raykd.evaluation.bootstrap import (
    difference_interval,
    ratio_interval,
    score_interval,
    weighted_difference_interval,
    weighted_interval,
)


def test_a_score_interval_holds_the_score_and_has_the_binomial_width():
    hits = [1, 0] * 150  # 300 examples, score 0.5
    low, high = score_interval(hits)
    half = 1.96 * math.sqrt(0.25 / 300)
    assert low < 0.5 < high and (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert score_interval([1] * 40) == [1.0, 1.0] and score_interval([1, 0] * 10, seed=1) != score_interval(
        [1, 0] * 10, seed=2)


def test_paired_differences_see_a_gain_that_unpaired_noise_would_hide():
    base = [1, 0, 1, 0, 0] * 40  # 0.4
    better = list(base)
    better[1:30:5] = [1] * 6  # six examples more are right, none fewer
    low, high = difference_interval(better, base)
    assert 0 < low <= 6 / 200 <= high  # excludes 0: each resample gains on the same examples
    assert difference_interval(base, base) == [0.0, 0.0]
    with pytest.raises(ValueError, match="same examples"):
        difference_interval([1, 0], [1])


def test_a_retention_interval_holds_the_ratio_and_is_tight_when_the_student_tracks_the_teacher():
    teacher = [1, 0] * 100  # 0.5
    student = list(teacher)
    student[0:40:2] = [0] * 20  # twenty of the teacher's hits missed: 80 / 100 = 0.8
    low, high = ratio_interval(student, teacher)
    assert low < 0.8 < high and high < 0.9  # paired: every resample keeps most of the teacher's hits
    assert ratio_interval(teacher, teacher) == [1.0, 1.0]
    assert ratio_interval([1, 0], [0, 0]) is None  # a teacher at 0 has no ratio
    with pytest.raises(ValueError, match="same examples"):
        ratio_interval([1, 0], [1])


def test_a_weighted_interval_is_of_the_per_token_mean_and_resamples_rows_whole():
    # one row of 9 tokens at 1.0, one of 1 token at 0.0: the per-token mean is 0.9, resamples give 0, 0.9 or 1
    low, high = weighted_interval([1.0, 0.0], [9, 1], seed=0)
    assert (low, high) == (0.0, 1.0)
    assert weighted_interval([0.4, 0.4, 0.4], [1, 5, 2]) == pytest.approx([0.4, 0.4])
    low, high = weighted_difference_interval([0.6, 0.8, 0.7, 0.9], [0.5, 0.5, 0.5, 0.5], [10, 1, 3, 2], seed=1)
    assert 0.1 <= low <= high <= 0.4
