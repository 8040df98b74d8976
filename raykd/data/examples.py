"""One causal-LM example of any row kind as token ids, the same way in every stage.

An example is a ``(prompt, completion)`` pair (a text row is ``("", text)``; ``completion=None`` is a
prompt to complete) or a conversation (a list of OpenAI messages, ``raykd.data.chat``). A prompt to
complete is a text or a conversation; a conversation ends with the chat template's generation prompt.
"""

from __future__ import annotations

import numpy as np

from raykd.config import DataConfig
from raykd.data.chat import conversation, render_chat, split_reply
from raykd.data.tokens import IGNORE_INDEX, encode_lm_row, lm_prefix

Prompt = str | list[dict]
Example = tuple[str, str | None] | list[dict]
REFERENCED_KINDS = ("prompt", "messages")  # row kinds with a reference completion, so a task score


def encode_example(tok, example: Example, max_len: int, train_on: str = "all_assistant"
                   ) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 where nothing is learned) of one example, truncated to ``max_len``."""
    if isinstance(example, list):  # the turns as they are: a final user turn is context, never a prompt
        rendered = render_chat(tok, example, train_on, generation_prompt=False)
        return rendered.ids[:max_len], rendered.labels[:max_len]
    return encode_lm_row(tok, example[0], example[1], max_len)


def prompt_ids(tok, prompt: Prompt, max_len: int) -> list[int]:
    """The ids a model continues from: a text prompt (cut at ``max_len``), or a conversation up to the
    assistant's header (its earliest turns cut, after the BOS, so the header the reply follows stays)."""
    if not isinstance(prompt, list):
        return encode_lm_row(tok, prompt, None, max_len)[0]
    ids = render_chat(tok, prompt, generation_prompt=True).ids
    if len(ids) <= max_len:
        return ids
    keep = len(lm_prefix(tok)) if ids[: len(lm_prefix(tok))] == lm_prefix(tok) else 0
    return ids[:keep] + ids[len(ids) - (max_len - keep):]


def pad_rows(rows: list[list[int]], value: int, width: int) -> np.ndarray:
    """``rows`` right-padded with ``value`` into one ``(len(rows), width)`` int64 array."""
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def encode_lm_batch(tok, examples: list[Example], width: int, train_on: str = "all_assistant"
                    ) -> dict[str, np.ndarray]:
    """Examples → right-padded ``input_ids``, ``attention_mask``, ``labels``, each ``(rows, width)``."""
    encoded = [encode_example(tok, e, width, train_on) for e in examples]
    return {"input_ids": pad_rows([e[0] for e in encoded], tok.pad_token_id, width),
            "attention_mask": pad_rows([[1] * len(e[0]) for e in encoded], 0, width),
            "labels": pad_rows([e[1] for e in encoded], IGNORE_INDEX, width)}


def generation_case(row: dict, data: DataConfig, kind: str) -> tuple[Prompt, str]:
    """A labeled held-out row as (the prompt a model completes, the reference completion): a prompt
    and its completion, or a conversation before its last assistant turn and that turn's content."""
    if kind == "messages":
        return split_reply(conversation(row[data.messages_field], labeled=True))
    return row[data.prompt_field], row[data.completion_field]


def timing_prompt(row: dict, data: DataConfig, kind: str) -> Prompt:
    """The prompt speed is timed on: a held-out row's prompt (text or conversation), else its text."""
    if kind in REFERENCED_KINDS:
        return generation_case(row, data, kind)[0]
    return str(row.get(data.text_field) or "")
