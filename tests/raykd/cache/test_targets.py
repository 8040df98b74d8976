"""The cache's target-only teacher columns: compacted by the scorer, expanded back for training."""

import numpy as np
import pytest
import torch

from raykd.cache.targets import compact_targets, dense_torch_batch, expand_targets


def dense_batch(seed: int = 0) -> dict[str, np.ndarray]:
    """Rows of width 6 with 3, 0 and 6 targets; teacher columns zero off the targets, as the scorer makes them."""
    rng = np.random.default_rng(seed)
    labels = np.full((3, 6), -100)
    labels[0, 2:5], labels[2] = [7, 8, 9], np.arange(6)
    targets = labels != -100
    values = rng.standard_normal((3, 6, 4)).astype(np.float16) * targets[..., None]
    indices = rng.integers(0, 50, (3, 6, 4)).astype(np.int16) * targets[..., None]
    return {"input_ids": np.arange(18).reshape(3, 6), "labels": labels, "values": values, "indices": indices}


def test_compaction_keeps_the_targets_only_and_expansion_restores_the_rows():
    batch = dense_batch()
    compact = compact_targets(batch)
    assert [v.shape for v in compact["values"]] == [(3, 4), (0, 4), (6, 4)]  # no prompt or padding positions
    assert compact["indices"][0].dtype == np.int16 and np.array_equal(compact["input_ids"], batch["input_ids"])
    restored = expand_targets(compact)
    for name in batch:
        assert np.array_equal(restored[name], batch[name]) and restored[name].dtype == batch[name].dtype


def test_rows_of_equal_length_arrive_stacked_and_expand_the_same():
    """Ray Data hands over a block whose rows all have T targets as one (B, T, k) array."""
    batch = dense_batch()
    batch["labels"][1, :3] = [1, 2, 3]
    batch["labels"][2, 3:] = -100
    batch["values"] *= (batch["labels"] != -100)[..., None]
    compact = compact_targets(batch)
    stacked = {k: np.stack(list(v)) if k in ("values", "indices") else v for k, v in compact.items()}
    assert stacked["values"].shape == (3, 3, 4)
    assert np.array_equal(expand_targets(stacked)["values"], batch["values"])


def test_a_row_whose_stored_positions_do_not_match_its_targets_is_refused():
    compact = compact_targets(dense_batch())
    compact["labels"][1, 0] = 5  # a target with no stored teacher row
    with pytest.raises(ValueError, match="'values'"):
        expand_targets(compact)


def test_the_collate_makes_tensors_and_leaves_datasets_without_a_teacher_alone():
    collated = dense_torch_batch(compact_targets(dense_batch()))
    assert collated["values"].shape == (3, 6, 4) and collated["values"].dtype == torch.float16
    plain = dense_torch_batch({"input_ids": np.ones((2, 3), np.int64), "labels": np.zeros((2, 3), np.int64)})
    assert set(plain) == {"input_ids", "labels"} and plain["labels"].dtype == torch.int64
