from ray_jobs.builtin_data import SPLIT_SIZES, generate_split, task_completion, task_prompt


def test_splits_are_deterministic_and_sized():
    for name, size in SPLIT_SIZES.items():
        rows = generate_split(name)
        assert len(rows) == size
        assert rows[:20] == generate_split(name, 20)


def test_task_rows_are_correct_reversals():
    for row in generate_split("train"):
        words = row["prompt"].removeprefix("reverse: ").removesuffix("\nanswer:").split()
        assert row["prompt"] == task_prompt(words)
        assert row["completion"] == task_completion(words) == " " + " ".join(words[::-1])


def test_unlabeled_has_prompts_only_and_classes_are_balanced():
    assert all(set(r) == {"prompt"} for r in generate_split("unlabeled"))
    labels = [r["label"] for r in generate_split("cls_train")]
    assert set(labels) == {0, 1, 2}
    assert min(labels.count(c) for c in range(3)) > len(labels) / 4
