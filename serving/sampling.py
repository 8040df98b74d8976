"""Choosing the next token per request of a batch: greedy, temperature and nucleus (top-p) sampling."""

from __future__ import annotations

import torch


def next_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row.

    Args:
        logits: ``(B, V)`` next-token logits.
        temperature: ``(B,)``; 0 means greedy (argmax) for that row.
        top_p: ``(B,)`` in (0, 1]; sample only from the smallest set of tokens whose probability
            reaches top_p (the most likely token is always kept).
    Returns ``(B,)`` int64 token ids.
    """
    greedy = logits.argmax(-1)
    scaled = logits.float() / temperature.clamp(min=1e-5)[:, None]
    probs = torch.softmax(scaled, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above each one
    sorted_probs = torch.where(before < top_p[:, None], sorted_probs, 0.0)
    picked = torch.multinomial(sorted_probs, 1, generator=generator).squeeze(-1)
    sampled = order.gather(-1, picked[:, None]).squeeze(-1)
    return torch.where(temperature == 0, greedy, sampled)
