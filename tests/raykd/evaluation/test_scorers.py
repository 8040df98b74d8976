"""evaluate.scorer: the built-in scorers' values, a user's module:function, and clear errors."""

import pytest

from raykd.config import ConfigError, load_config
from raykd.evaluation.scorers import exact, load_scorer, scores, token_f1


def first_word(prediction: str, reference: str) -> float:
    """A user's scorer: 1 when the first words agree."""
    return float(prediction.split()[:1] == reference.split()[:1])


def out_of_range(prediction: str, reference: str) -> float:
    return 2.0


@pytest.mark.parametrize("prediction, reference, expected", [
    (" an animal and  a color\n", "an animal and a color", 1.0), ("an animal", "An animal", 0.0), ("", "", 1.0),
])
def test_exact_match_ignores_surrounding_and_repeated_whitespace_only(prediction, reference, expected):
    assert exact(prediction, reference) == expected


@pytest.mark.parametrize("prediction, reference, expected", [
    ("an animal and a color", "An animal and a color", 1.0), ("an animal", "an animal and a color", 2 * 1 * 0.4 / 1.4),
    ("a bird", "an animal", 0.0), ("", "x", 0.0), ("", "", 1.0), ("a a b", "a b b", 2 / 3),
])
def test_token_f1_is_the_f1_of_the_words(prediction, reference, expected):
    assert token_f1(prediction, reference) == pytest.approx(expected)


def test_a_users_function_is_imported_and_its_values_checked():
    scorer = load_scorer(f"{__name__}:first_word")
    assert scores(scorer, ["an owl", "a bird"], ["an animal", "an animal"]) == [1.0, 0.0]
    with pytest.raises(ConfigError, match=r"returned 2\.0 .* a number in \[0, 1\]"):
        scores(load_scorer(f"{__name__}:out_of_range"), ["x"], ["y"])


@pytest.mark.parametrize("spec, message", [
    ("fuzzy", "use exact, token_f1 or module:function"), ("no_such_module_x:f", "cannot import no_such_module_x"),
    (f"{__name__}:missing", "has no missing"), (f"{__name__}:pytest", "is not a function"),
])
def test_a_scorer_that_cannot_be_found_is_one_line_naming_the_key(spec, message):
    with pytest.raises(ConfigError, match=f"'evaluate.scorer' = .*{message}"):
        load_scorer(spec)
    assert load_config(None, [f"evaluate.scorer={spec}"]).evaluate.scorer == spec  # checked where it is used
