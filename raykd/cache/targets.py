"""The cache stores the teacher's columns at target positions only; training batches want them dense.

A row's teacher columns (``raykd.losses.TEACHER_KEYS``) are ``(T, ...)`` arrays, T = the row's targets
(``labels != -100``) in position order: no fixed-width zeros for prompt and padding positions (a prompt
of 400 tokens and a 100-token answer stores 100 rows of top-k, not 512). ``expand_targets`` puts them
back at their positions, ``(B, S, ...)`` with zeros elsewhere, as the loss and the models expect.
Pure numpy, no Ray: the scorer compacts, the training loop's collate and the held-out reader expand.
"""

from __future__ import annotations

import numpy as np
import torch

from raykd.data.tokens import IGNORE_INDEX
from raykd.losses import TEACHER_KEYS


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array holding ``arrays`` as they are (numpy would stack equal shapes)."""
    out = np.empty(len(arrays), dtype=object)
    for i, array in enumerate(arrays):
        out[i] = array
    return out


def compact_targets(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Dense teacher columns ``(B, S, ...)`` -> B arrays of ``(T_b, ...)`` at the row's targets."""
    targets = batch["labels"] != IGNORE_INDEX
    return {name: _ragged([row[mask] for row, mask in zip(column, targets)]) if name in TEACHER_KEYS else column
            for name, column in batch.items()}


def expand_targets(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of ``compact_targets``: each teacher column as ``(B, S, ...)``, zeros off the targets.
    A row whose stored count differs from its targets is a corrupt cache: ValueError naming the column."""
    present = [name for name in TEACHER_KEYS if name in batch]
    if not present:  # a tokenised dataset (fine-tuning, the no-teacher baseline)
        return batch
    targets = batch["labels"] != IGNORE_INDEX
    out = dict(batch)
    for name in present:
        rows = list(batch[name])
        if [len(r) for r in rows] != targets.sum(axis=1).tolist():
            raise ValueError(f"cache column {name!r}: stored positions do not match the rows' targets")
        dense = np.zeros((*targets.shape, *rows[0].shape[1:]), dtype=rows[0].dtype)
        dense[targets] = np.concatenate(rows)
        out[name] = dense
    return out


def dense_torch_batch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """``iter_torch_batches``'s collate: teacher columns expanded (when present), every column a tensor."""
    return {name: torch.as_tensor(column) for name, column in expand_targets(batch).items()}
