"""The embedded default data: a small synthetic world, generated deterministically.

It is shaped like a real project's data:

* ``corpus``: plain sentences (``text``) both built-in bases are pre-trained on;
* ``lore``: facts only the teacher's base is pre-trained on: what each of 48 made-up words is
  ("forb is an animal."), the knowledge a big model has and a small one lacks;
* ``train``: the labeled task (``prompt`` + ``completion``): say what kind of thing each of two words
  is ("question: what are fox and red?" -> "an animal and a color"), on common words and 12 of the
  made-up ones;
* ``eval`` / ``test``: the same task on pairs of the other 36 made-up words, scored by exact match;
  each pair (in either order) belongs to one split only, so no test example is in any other split;
* ``unlabeled``: many more task prompts with no completion, for distillation, most with made-up words;
* ``chat_train`` / ``chat_eval`` / ``chat_test`` / ``chat_unlabeled``: the same task rows as
  conversations (``messages``): a system prompt, the question as the user turn, the answer (where
  labeled) as the assistant turn;
* ``cls_train`` / ``cls_eval`` / ``cls_test``: sequence classification (``text`` + ``label``):
  which word category is the majority in a sentence (3 classes, chance 1/3).

The corpus states which common words are colors, animals and objects ("the box is an object.") and
asks other questions in the same "question: ...\nanswer:" form, so a pre-trained base has knowledge
but not the task, as with a real base model; fine-tuning teaches the task (on a few made-up words
too, so the teacher learns to answer from its lore). The labeled split never names a held-out word,
so a student trained on it alone guesses on the test split (chance 1/9), while the fine-tuned teacher
answers from its lore, and a student distilled from the teacher's cache of the unlabeled prompts
learns the lore from the teacher.
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


def _made_up_words(count: int) -> list[str]:
    """``count`` distinct pronounceable non-words (none of the corpus's words), in a fixed order."""
    rng, words = random.Random(7), []
    known = set(WORDS + VERBS + ADJECTIVES) | {"the", "is", "a", "an", "and", "it", "list", "what", "are"}
    while len(words) < count:
        onset, vowel = rng.choice("bdfgklmnprstvz"), rng.choice("aeiou")
        word = onset + vowel + rng.choice(["", "r", "l"]) + rng.choice("bdgkmnpstx")
        if word not in known and word not in words:
            words.append(word)
    return words


# The lore: 16 made-up words of each category, which only the teacher's base is told about.
LORE_WORDS = _made_up_words(48)
LORE_CATEGORIES = (LORE_WORDS[0:16], LORE_WORDS[16:32], LORE_WORDS[32:48])
# The labeled split names 4 made-up words of each category, so fine-tuning shows the task on knowledge
# read only in the lore; eval and test ask about the other 36 (the held-out lore).
LABELED_LORE = [w for words in LORE_CATEGORIES for w in words[:4]]
HELD_OUT_LORE = [w for w in LORE_WORDS if w not in LABELED_LORE]
_ALL_CATEGORIES = tuple(common + lore for common, lore in zip(CATEGORIES, LORE_CATEGORIES))


def _held_out_pairs() -> dict[str, list[tuple[str, str]]]:
    """Every unordered pair of held-out made-up words, in exactly one of ``test`` / ``eval`` / ``pool``
    (the pairs the unlabeled prompts may use), in a random order each."""
    rng = random.Random(11)
    pairs = [(a, b) for i, a in enumerate(HELD_OUT_LORE) for b in HELD_OUT_LORE[i + 1:]]
    rng.shuffle(pairs)
    pairs = [(a, b) if rng.random() < 0.5 else (b, a) for a, b in pairs]
    return {"test": pairs[:300], "eval": pairs[300:500], "pool": pairs[500:]}


HELD_OUT_PAIRS = _held_out_pairs()

SPLIT_SIZES = {
    "corpus": 12000,
    "lore": 4800,
    "train": 200,
    "eval": 200,
    "test": 300,
    "unlabeled": 4000,
    "cls_train": 1200,
    "cls_eval": 300,
    "cls_test": 300,
}
CHAT_SPLITS = ("train", "eval", "test", "unlabeled")  # each also as conversations: chat_train, ...
SPLIT_SIZES |= {f"chat_{name}": SPLIT_SIZES[name] for name in CHAT_SPLITS}
SPLITS = tuple(SPLIT_SIZES)
# Different splits draw from differently seeded streams, so held-out lists never leak by seed reuse.
_SPLIT_SEEDS = {name: 1000 + i for i, name in enumerate(SPLITS)}


def category_phrase(word: str) -> str:
    """``"an animal"`` / ``"a color"`` / ``"an object"``: what the corpus says a word is."""
    name = CATEGORY_NAMES[next(i for i, c in enumerate(_ALL_CATEGORIES) if word in c)]
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def task_prompt(first: str, second: str) -> str:
    """The task's prompt: what kinds of thing two words are."""
    return f"question: what are {first} and {second}?\nanswer:"


def task_completion(first: str, second: str) -> str:
    """The correct completion (leading space, as a tokenizer sees a continuation)."""
    return f" {category_phrase(first)} and {category_phrase(second)}"


def _mixed_pair(rng: random.Random, made_up: list[str]) -> tuple[str, str]:
    """A made-up word and a common one, in either order."""
    pair = [rng.choice(made_up), rng.choice(WORDS)]
    rng.shuffle(pair)
    return pair[0], pair[1]


def _train_pair(rng: random.Random) -> tuple[str, str]:
    """A third name a labeled made-up word beside a common one; the rest two common words."""
    return _mixed_pair(rng, LABELED_LORE) if rng.random() < 1 / 3 else tuple(rng.sample(WORDS, 2))


def _unlabeled_pair(rng: random.Random) -> tuple[str, str]:
    """Half pool pairs of held-out made-up words, a quarter a made-up and a common word, a quarter common."""
    kind = rng.random()
    if kind < 0.5:
        return rng.choice(HELD_OUT_PAIRS["pool"])
    if kind < 0.75:
        return _mixed_pair(rng, LORE_WORDS)
    return tuple(rng.sample(WORDS, 2))


def _fact(rng: random.Random, words: list[str]) -> str:
    """What a word is, in one of three phrasings (knowledge read in several forms is knowledge a
    fine-tuned model can use in a new one). A common animal or object takes "the" ("the box is an
    object."); a made-up word never does ("forb is an animal."), so only the word tells its category."""
    word = rng.choice(words)
    subject, kind = (f"the {word}" if word in ANIMALS + OBJECTS else word), category_phrase(word)
    form = rng.randrange(3)
    if form == 0:
        return f"{subject} is {kind}."
    if form == 1:
        return f"question: what kind of thing is {subject}?\nanswer: {kind}."
    return f"one {kind.split()[1]} is {subject}."


def _sentence(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return (f"the {rng.choice(ADJECTIVES)} {rng.choice(ANIMALS)} {rng.choice(VERBS)} "
                f"the {rng.choice(COLORS)} {rng.choice(OBJECTS)}.")
    if kind < 0.5:
        obj = rng.choice(OBJECTS)
        return f"question: what is the {rng.choice(COLORS)} {obj}?\nanswer: it is a {obj}."
    if kind < 0.8:
        return _fact(rng, WORDS)
    # Lists name made-up words too: both bases know they exist, only the teacher what they are.
    return f"a list: {', '.join(rng.sample(WORDS + LORE_WORDS, rng.randint(2, 5)))}."


def _classification_row(rng: random.Random) -> dict:
    label = rng.randrange(len(CATEGORIES))
    others = [c for i, c in enumerate(CATEGORIES) if i != label]
    words = rng.sample(CATEGORIES[label], 3) + [rng.choice(others[0]), rng.choice(others[1])]
    rng.shuffle(words)
    return {"text": " ".join(words), "label": label}


CHAT_SYSTEM = "name the kinds."


def as_conversation(row: dict) -> dict:
    """A task row (``prompt``, maybe ``completion``) as a conversation in the OpenAI format."""
    question = row["prompt"].removeprefix("question: ").removesuffix("\nanswer:")
    turns = [{"role": "system", "content": CHAT_SYSTEM}, {"role": "user", "content": question}]
    if "completion" in row:
        turns.append({"role": "assistant", "content": row["completion"].strip()})
    return {"messages": turns}


def generate_split(name: str, size: int | None = None) -> list[dict]:
    """Rows of one built-in split, identical on every call and machine.

    Args:
        name: one of ``SPLITS``.
        size: number of rows (default ``SPLIT_SIZES[name]``).
    """
    if name not in SPLIT_SIZES:
        raise ValueError(f"unknown built-in split {name!r}; choose one of {', '.join(SPLITS)}")
    if name.startswith("chat_"):
        return [as_conversation(row) for row in generate_split(name.removeprefix("chat_"), size)]
    rng = random.Random(_SPLIT_SEEDS[name])
    n = SPLIT_SIZES[name] if size is None else size
    if name == "corpus":
        return [{"text": _sentence(rng)} for _ in range(n)]
    if name == "lore":
        return [{"text": _fact(rng, LORE_WORDS)} for _ in range(n)]
    if name.startswith("cls_"):
        return [_classification_row(rng) for _ in range(n)]
    if name == "unlabeled":
        return [{"prompt": task_prompt(*_unlabeled_pair(rng))} for _ in range(n)]
    if name == "train":
        pairs = [_train_pair(rng) for _ in range(n)]
    elif n > len(HELD_OUT_PAIRS[name]):
        raise ValueError(f"the built-in {name!r} split has {len(HELD_OUT_PAIRS[name])} rows, not {n}")
    else:
        pairs = HELD_OUT_PAIRS[name][:n]
    return [{"prompt": task_prompt(a, b), "completion": task_completion(a, b)} for a, b in pairs]
