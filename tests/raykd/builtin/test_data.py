import re

import pytest

from raykd.builtin.data import (
    HELD_OUT_LORE,
    LABELED_LORE,
    LORE_WORDS,
    SPLIT_SIZES,
    WORDS,
    category_phrase,
    generate_split,
)


def words_of(prompt: str) -> tuple[str, str]:
    first, second = prompt.removeprefix("question: what are ").removesuffix("?\nanswer:").split(" and ")
    return first, second


def test_splits_are_deterministic_and_sized():
    for name, size in SPLIT_SIZES.items():
        rows = generate_split(name)
        assert len(rows) == size
        assert rows[:20] == generate_split(name, 20)
    with pytest.raises(ValueError, match="'test' split has 300 rows"):
        generate_split("test", 301)


def test_task_answers_name_each_words_category():
    assert category_phrase("fox") == "an animal" and category_phrase("red") == "a color"
    for row in generate_split("train") + generate_split("test"):
        first, second = words_of(row["prompt"])
        assert row["completion"] == f" {category_phrase(first)} and {category_phrase(second)}"


def test_no_test_pair_is_in_any_other_split():
    """A test example (its pair of words, in either order) is in no training, eval or unlabeled split;
    no split but the lore says what a held-out made-up word is."""
    test = [frozenset(words_of(r["prompt"])) for r in generate_split("test")]
    assert len(set(test)) == len(test) and all(pair <= set(HELD_OUT_LORE) for pair in test)
    for split in ("train", "eval", "unlabeled"):
        assert not set(test) & {frozenset(words_of(r["prompt"])) for r in generate_split(split)}, split
    word, kind = rf"\b({'|'.join(HELD_OUT_LORE)})\b", r"\b(color|animal|object)\b"
    pattern = re.compile(f"{word}.*{kind}|{kind}.*{word}", re.S)  # a made-up word beside a category
    for split in ("corpus", "train", "cls_train"):
        assert not [r for r in generate_split(split) if pattern.search(" ".join(map(str, r.values())))], split
    lore = [r["text"] for r in generate_split("lore")]  # the pattern finds every fact about a held-out word
    assert sum(bool(pattern.search(t)) for t in lore) == sum(bool(set(re.findall(r"\w+", t)) & set(HELD_OUT_LORE))
                                                         for t in lore)


def test_the_labeled_split_names_no_held_out_word_and_the_unlabeled_mostly_do():
    train = [w for r in generate_split("train") for w in words_of(r["prompt"])]
    assert set(train) <= set(WORDS + LABELED_LORE) and set(train) >= set(LABELED_LORE)
    unlabeled = [words_of(r["prompt"]) for r in generate_split("unlabeled")]
    assert sum(any(w in LORE_WORDS for w in pair) for pair in unlabeled) / len(unlabeled) > 0.6
    assert {w for pair in unlabeled for w in pair} >= set(LORE_WORDS)


def test_unlabeled_has_prompts_only_and_classes_are_balanced():
    assert all(set(r) == {"prompt"} for r in generate_split("unlabeled"))
    labels = [r["label"] for r in generate_split("cls_train")]
    assert set(labels) == {0, 1, 2}
    assert min(labels.count(c) for c in range(3)) > len(labels) / 4
