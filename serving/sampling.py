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


def visible_text(text: str, stops: list[str], final: bool) -> tuple[str, bool]:
    """What of a completion's decoded ``text`` may be sent so far, and whether a stop string ended it.

    Cut before the first stop string found; otherwise, unless ``final``, hold back an incomplete UTF-8
    character and any ending that could still grow into a stop string.
    """
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    if found:
        return text[: min(found)], True
    if final:
        return text, False
    text = text.rstrip("\ufffd")
    held = max((n for s in stops for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])),
               default=0)
    return text[: len(text) - held], False
