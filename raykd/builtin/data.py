"""The embedded default data: a small synthetic world, generated deterministically.

It is shaped like a real project's data:

* ``corpus``: plain sentences (``text``) the built-in base models are pre-trained on;
* ``train`` / ``eval`` / ``test``: a labeled task (``prompt`` + ``completion``): say what kind of
  thing each of two words is ("question: what are fox and red?" -> "an animal and a color"), scored
  by exact match on held-out examples (pairs of words unseen in training are common);
* ``unlabeled``: many more task prompts with no completion, for distillation;
* ``cls_train`` / ``cls_eval`` / ``cls_test``: sequence classification (``text`` + ``label``):
  which word category is the majority in a sentence (3 classes, chance 1/3).

The corpus states which words are colors, animals and objects ("the box is an object.") and asks
other questions in the same "question: ...\nanswer:" form, so a pre-trained base has the knowledge
but not the task, as with a real base model; fine-tuning teaches the task.
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
    "train": 200,
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


def category_phrase(word: str) -> str:
    """``"an animal"`` / ``"a color"`` / ``"an object"``: what the corpus says a word is."""
    name = CATEGORY_NAMES[next(i for i, c in enumerate(CATEGORIES) if word in c)]
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def task_prompt(first: str, second: str) -> str:
    """The task's prompt: what kinds of thing two words are."""
    return f"question: what are {first} and {second}?\nanswer:"


def task_completion(first: str, second: str) -> str:
    """The correct completion (leading space, as a tokenizer sees a continuation)."""
    return f" {category_phrase(first)} and {category_phrase(second)}"


def _task_example(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(WORDS, 2)
    return task_prompt(first, second), task_completion(first, second)


def _fact(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    subject = word if word in COLORS else f"the {word}"
    return f"{subject} is {category_phrase(word)}."


def _sentence(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return (f"the {rng.choice(ADJECTIVES)} {rng.choice(ANIMALS)} {rng.choice(VERBS)} "
                f"the {rng.choice(COLORS)} {rng.choice(OBJECTS)}.")
    if kind < 0.5:
        obj = rng.choice(OBJECTS)
        return f"question: what is the {rng.choice(COLORS)} {obj}?\nanswer: it is a {obj}."
    if kind < 0.8:
        return _fact(rng)
    return f"a list: {', '.join(rng.sample(WORDS, rng.randint(2, 5)))}."


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
        prompt, completion = _task_example(rng)
        rows.append({"prompt": prompt} if name == "unlabeled" else {"prompt": prompt, "completion": completion})
    return rows
