from raykd.builtin.data import SPLIT_SIZES, category_phrase, generate_split


def test_splits_are_deterministic_and_sized():
    for name, size in SPLIT_SIZES.items():
        rows = generate_split(name)
        assert len(rows) == size
        assert rows[:20] == generate_split(name, 20)


def test_task_answers_name_each_words_category():
    assert category_phrase("fox") == "an animal" and category_phrase("red") == "a color"
    for row in generate_split("train") + generate_split("test"):
        first, second = row["prompt"].removeprefix("question: what are ").removesuffix("?\nanswer:").split(" and ")
        assert row["completion"] == f" {category_phrase(first)} and {category_phrase(second)}"


def test_held_out_pairs_are_mostly_unseen_in_training():
    train = {r["prompt"] for r in generate_split("train")}
    test = [r["prompt"] for r in generate_split("test")]
    assert sum(p not in train for p in test) / len(test) > 0.8


def test_unlabeled_has_prompts_only_and_classes_are_balanced():
    assert all(set(r) == {"prompt"} for r in generate_split("unlabeled"))
    labels = [r["label"] for r in generate_split("cls_train")]
    assert set(labels) == {0, 1, 2}
    assert min(labels.count(c) for c in range(3)) > len(labels) / 4
