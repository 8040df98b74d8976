"""The transformers engine's running batch: rows decoding together over one KV cache, which new rows
join and finished rows leave between decoding steps (continuous batching). Pure torch: no Ray.

Rows are left-padded: every row's latest token is in the last column, so one forward pass of the
``(B, 1)`` latest tokens advances them all. Joining pads the shorter of two batches on the left; leaving
cuts the columns no remaining row uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class DecodeBatch:
    """Rows decoding together.

    cache: the model's ``DynamicCache``; each layer's keys and values ``(B, heads, L, head_dim)``.
    mask: ``(B, L)`` int64, 1 where a row has a real (non-padding) token.
    positions: ``(B, 1)`` the position id of each row's latest token (the next step's input).
    last: ``(B, 1)`` each row's latest token.
    temperature, top_p: ``(B,)`` each row's sampling settings.
    rows: per row, the caller's own state (opaque here).
    """

    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor
    last: torch.Tensor
    temperature: torch.Tensor
    top_p: torch.Tensor
    rows: list

    def __len__(self) -> int:
        return len(self.rows)


def joinable(cache: Any) -> bool:
    """Whether rows can join ``cache`` between steps: every layer a plain growing ``DynamicLayer``
    (sliding-window or recurrent layers keep state that left-padding would corrupt)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)


def _left_pad(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """``t`` with zeros prepended along ``dim`` up to ``length``."""
    shape = list(t.shape)
    shape[dim] = length - t.shape[dim]
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def merge(a: DecodeBatch, b: DecodeBatch) -> DecodeBatch:
    """``a`` and ``b`` as one batch (``a``'s rows first, in ``a``'s cache object); the shorter is
    left-padded to the longer's length. Both caches must be ``joinable``."""
    length = max(a.mask.shape[1], b.mask.shape[1])
    for la, lb in zip(a.cache.layers, b.cache.layers, strict=True):
        la.keys = torch.cat([_left_pad(la.keys, length, -2), _left_pad(lb.keys, length, -2)])
        la.values = torch.cat([_left_pad(la.values, length, -2), _left_pad(lb.values, length, -2)])
    return DecodeBatch(a.cache, torch.cat([_left_pad(a.mask, length, 1), _left_pad(b.mask, length, 1)]),
                       torch.cat([a.positions, b.positions]), torch.cat([a.last, b.last]),
                       torch.cat([a.temperature, b.temperature]), torch.cat([a.top_p, b.top_p]), a.rows + b.rows)


def select(batch: DecodeBatch, keep: list[int]) -> DecodeBatch:
    """Only the rows ``keep`` (indices, non-empty); in a ``joinable`` cache the leading columns that no
    kept row uses are cut as well, so a long-lived batch does not grow without bound."""
    index = torch.tensor(keep, device=batch.mask.device)
    mask = batch.mask[index]
    start = 0
    if joinable(batch.cache):
        start = int(mask.any(0).long().argmax())  # the first column any kept row uses
        for layer in batch.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]
    else:
        batch.cache.batch_select_indices(index)
    return DecodeBatch(batch.cache, mask[:, start:], batch.positions[index], batch.last[index],
                       batch.temperature[index], batch.top_p[index], [batch.rows[i] for i in keep])
