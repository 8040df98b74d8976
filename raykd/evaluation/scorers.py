"""How a generated completion is scored against its reference (``evaluate.scorer``): a function
``(prediction: str, reference: str) -> float`` in [0, 1]; a model's score is its mean over the rows.

* ``exact``: 1.0 when the two are equal after stripping and collapsing whitespace, else 0.0.
* ``token_f1``: F1 of the two texts' lower-cased words (SQuAD's token F1, punctuation kept).
* ``module:function``: a user's function of that signature, imported from the Python path.
"""

from __future__ import annotations

import collections
import importlib
import numbers
from collections.abc import Callable

from raykd.config import ConfigError

Scorer = Callable[[str, str], float]


def exact(prediction: str, reference: str) -> float:
    return float(prediction.split() == reference.split())


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = prediction.lower().split(), reference.lower().split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


BUILT_IN = {"exact": exact, "token_f1": token_f1}


def load_scorer(spec: str) -> Scorer:
    """The scorer ``spec`` names; a ConfigError naming ``evaluate.scorer`` if it cannot be found."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(f"'evaluate.scorer' = {spec!r}: use exact, token_f1 or module:function")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except ImportError as e:
        raise ConfigError(f"'evaluate.scorer' = {spec!r}: cannot import {module_name}: {e}") from None
    except AttributeError:
        raise ConfigError(f"'evaluate.scorer' = {spec!r}: {module_name} has no {name}") from None
    if not callable(function):
        raise ConfigError(f"'evaluate.scorer' = {spec!r}: {name} is not a function")
    return function


def scores(scorer: Scorer, predictions: list[str], references: list[str]) -> list[float]:
    """One score per row; a user's scorer that returns anything but a number in [0, 1] is a ConfigError."""
    out = []
    for prediction, reference in zip(predictions, references):
        value = scorer(prediction, reference)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
            raise ConfigError(f"evaluate.scorer {getattr(scorer, '__name__', scorer)} returned {value!r} for "
                              f"({prediction!r}, {reference!r}); it must return a number in [0, 1]")
        out.append(float(value))
    return out
