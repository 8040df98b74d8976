"""The embedded default data: a small synthetic world, generated deterministically.

It is shaped like a real project's data:

* ``corpus``: plain sentences (``text``) the built-in base models are pre-trained on;
* ``train`` / ``eval`` / ``test``: a labeled task (``prompt`` + ``completion``), reversing a list of
  words, scored by exact match on held-out examples;
* ``unlabeled``: many more task prompts with no completion, for distillation;
* ``cls_train`` / ``cls_eval`` / ``cls_test``: sequence classification (``text`` + ``label``):
  which word category is the majority in a sentence (3 classes, chance 1/3).

The corpus shows lists read backwards in another surface form ("to reverse a b c, read it backwards:
c b a."),
so a pre-trained base has the latent skill but not the task's prompt format, as with a real base
model; fine-tuning teaches the format.
"""

from __future__ import annotations

import random

COLORS = "red blue green yellow black white purple orange pink brown gray gold".split()
ANIMALS = "fox cat dog bird fish horse mouse lion tiger bear wolf owl frog duck goat sheep".split()
OBJECTS = "box cup ball hat book lamp key door chair table bell coin".split()
VERBS = "sees finds likes chases holds wants takes follows".split()
ADJECTIVES = "small big quick slow happy quiet brave old young calm".split()
CATEGORIES = (COLORS, ANIMALS, OBJECTS)
CATEGORY_NAMES = ("color", "animal", "object")
WORDS = COLORS + ANIMALS + OBJECTS

SPLIT_SIZES = {
    "corpus": 12000,
    "train": 400,
    "eval": 200,
    "test": 300,
    "unlabeled": 4000,
    "cls_train": 1200,
    "cls_eval": 300,
    "cls_test": 300,
}
SPLITS = tuple(SPLIT_SIZES)
# Different splits draw from differently seeded streams, so held-out lists never leak by seed reuse.
_SPLIT_SEEDS = {name: 1000 + i for i, name in enumerate(SPLITS)}


def task_prompt(words: list[str]) -> str:
    """The task's prompt for a list of words."""
    return f"reverse: {' '.join(words)}\nanswer:"


def task_completion(words: list[str]) -> str:
    """The correct completion (leading space, as a tokenizer sees a continuation)."""
    return " " + " ".join(reversed(words))


def _word_list(rng: random.Random) -> list[str]:
    return rng.sample(WORDS, rng.randint(2, 5))


def _sentence(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        return (f"the {rng.choice(ADJECTIVES)} {rng.choice(ANIMALS)} {rng.choice(VERBS)} "
                f"the {rng.choice(COLORS)} {rng.choice(OBJECTS)}.")
    if kind < 0.5:
        obj = rng.choice(OBJECTS)
        return f"question: what is the {rng.choice(COLORS)} {obj}?\nanswer: it is a {obj}."
    words = _word_list(rng)
    if kind < 0.8:
        return f"to reverse {' '.join(words)}, read it backwards:{task_completion(words)}."
    return f"a list: {', '.join(words)}."


def _classification_row(rng: random.Random) -> dict:
    label = rng.randrange(len(CATEGORIES))
    others = [c for i, c in enumerate(CATEGORIES) if i != label]
    words = rng.sample(CATEGORIES[label], 3) + [rng.choice(others[0]), rng.choice(others[1])]
    rng.shuffle(words)
    return {"text": " ".join(words), "label": label}


def generate_split(name: str, size: int | None = None) -> list[dict]:
    """Rows of one built-in split, identical on every call and machine.

    Args:
        name: one of ``SPLITS``.
        size: number of rows (default ``SPLIT_SIZES[name]``).
    """
    if name not in SPLIT_SIZES:
        raise ValueError(f"unknown built-in split {name!r}; choose one of {', '.join(SPLITS)}")
    rng = random.Random(_SPLIT_SEEDS[name])
    n = SPLIT_SIZES[name] if size is None else size
    if name == "corpus":
        return [{"text": _sentence(rng)} for _ in range(n)]
    if name.startswith("cls_"):
        return [_classification_row(rng) for _ in range(n)]
    rows = []
    for _ in range(n):
        words = _word_list(rng)
        row = {"prompt": task_prompt(words)}
        if name != "unlabeled":
            row["completion"] = task_completion(words)
        rows.append(row)
    return rows
