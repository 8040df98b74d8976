"""Greedy decoding compared across engines, processes or batch shapes: equal wherever no step is a near-tie.

Two engines (or one model in two processes, thread pools or paddings) sum in other orders, so their fp32
logits differ in the last bits, and greedy decoding agrees token for token except where the top two logits
are that close. ``NEAR_TIE`` is orders of magnitude above fp32 rounding of these logits and far below the
differences a wrong token comes from (a misaligned KV cache, a wrong position, another model).
"""

from __future__ import annotations

import torch

from raykd.data.examples import Prompt, prompt_ids
from raykd.data.tokens import stop_token_ids

NEAR_TIE = 1e-3  # logits (nats)


def has_near_tie(model, tokenizer, prompt: Prompt, max_new_tokens: int, max_len: int) -> bool:
    """Whether any step of ``model``'s own greedy continuation of ``prompt`` (a text or a conversation,
    encoded as ``raykd.evaluation.scoring.generate_completions`` encodes it) has its top two logits within
    ``NEAR_TIE``."""
    ids = torch.tensor([prompt_ids(tokenizer, prompt, max_len)])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=stop_token_ids(model, tokenizer), output_logits=True,
                             return_dict_in_generate=True)
    top2 = torch.stack([step[0].float().topk(2).values for step in out.logits])  # (steps, 2)
    return bool((top2[:, 0] - top2[:, 1] < NEAR_TIE).any())


def decisive(items: list, ties: list[bool]) -> list:
    """The items whose greedy path has no near-tie: the ones two engines must agree on exactly."""
    return [item for item, tie in zip(items, ties) if not tie]
