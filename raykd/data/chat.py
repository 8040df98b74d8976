"""Conversations in the OpenAI ``messages`` format, rendered by the tokenizer's own chat template.

One function, ``render_chat``, turns a conversation into token ids and a per-token target mask; the
fine-tune rows, the cache, on-policy prompts, evaluation and the served ``/v1/chat/completions`` all
call it (through ``raykd.data.examples``), so the ids a served conversation gets are the ids training
used for it.

Targets are assistant turns (every one, or the last: ``train_on``). Their boundaries come from the
rendered text: the span of assistant turn i runs from the end of the render of the turns before it
(with the generation prompt) to the end of the render through it, less trailing whitespace, so the
template's end-of-turn token is the span's last target. transformers' ``return_assistant_tokens_mask``
needs ``{% generation %}`` tags that common templates (Llama-3, Qwen2.5) lack, and returns an empty
mask without them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from raykd.config import ConfigError
from raykd.data.tokens import IGNORE_INDEX, TokenizerError, lm_prefix

ROLES = ("system", "developer", "user", "assistant", "tool")


class ChatError(ConfigError):
    """A malformed conversation, or one the chat template refuses: one line naming the message and what
    is wrong (a bad-input error: callers add the file and row, or the HTTP 400)."""


def _content(message: dict, index: int) -> str:
    """A message's content as text: a string, or OpenAI's list of text parts joined by newlines."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise ChatError(f"message {index}: content parts must be {{'type': 'text', 'text': ...}}")
        return "\n".join(p["text"] for p in content)
    if content is None and message.get("role") == "assistant" and message.get("tool_calls"):
        return ""
    raise ChatError(f"message {index}: content must be a string or a list of text parts")


def _plain(value):
    """``value`` with numpy arrays (how Ray Data hands over Arrow lists) turned into lists, all the way down."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, list) else value


def conversation(value, labeled: bool = False) -> list[dict]:
    """The checked, normalised conversation of ``value`` (a list of messages, its JSON text, or the array
    a Parquet column gives): keys whose value is None dropped (Arrow fills absent struct keys with None),
    content as text. ``labeled``: it must hold an assistant turn to learn from."""
    try:
        messages = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        raise ChatError("the conversation is text that is not JSON") from None
    messages = _plain(messages)
    if not isinstance(messages, list) or not messages:
        raise ChatError("a conversation must be a non-empty list of messages")
    out = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ChatError(f"message {index}: not an object")
        message = {k: v for k, v in message.items() if v is not None}
        if message.get("role") not in ROLES:
            raise ChatError(f"message {index}: role {message.get('role')!r} is not one of {', '.join(ROLES)}")
        out.append(message | {"content": _content(message, index)})
    if out[0]["role"] == "assistant":
        raise ChatError("message 0: a conversation cannot start with an assistant turn")
    if labeled and not any(m["role"] == "assistant" for m in out):
        raise ChatError("no assistant turn to learn from (a conversation the teacher should answer belongs "
                        "in data.unlabeled)")
    return out


def unanswered(messages: list[dict]) -> list[dict]:
    """A conversation as a prompt: without a final assistant turn, which the model writes anew (the
    replies of an unlabeled source or a speed test are not references)."""
    return messages[:-1] if messages[-1]["role"] == "assistant" else messages


def split_reply(messages: list[dict]) -> tuple[list[dict], str]:
    """A labeled conversation as (the turns before its last assistant turn, that turn's content): the
    prompt and the reference of a held-out conversation."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


@dataclass(frozen=True)
class RenderedChat:
    """``ids`` the model sees, ``targets[i]`` whether ids[i] is learned, ``text`` the rendered string."""

    ids: list[int]
    targets: list[bool]
    text: str

    @property
    def labels(self) -> list[int]:
        return [i if t else IGNORE_INDEX for i, t in zip(self.ids, self.targets)]


def _render(tok, messages: list[dict], generation_prompt: bool) -> str:
    from jinja2 import TemplateError

    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except TemplateError as e:  # a template's raise_exception: roles must alternate, no system role, ...
        raise ChatError(f"the chat template refuses the conversation: {e}") from None


def _spans(tok, messages: list[dict], text: str, train_on: str) -> list[tuple[int, int]]:
    """Character spans of the chosen assistant turns in ``text``."""
    # OpenAI's fine-tuning format marks an assistant turn not to learn from with weight 0
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]
    spans = []
    for i in turns if train_on == "all_assistant" else turns[-1:]:
        before, through = _render(tok, messages[:i], True), _render(tok, messages[: i + 1], False)
        if not (text.startswith(through) and through.startswith(before)):
            raise ChatError(f"message {i}: the chat template renders earlier turns differently once later ones "
                            "follow; set data.train_on=last_assistant")
        spans.append((len(before), len(through.rstrip())))
    return spans


def render_chat(tok, messages, train_on: str = "all_assistant", generation_prompt: bool | None = None
                ) -> RenderedChat:
    """``messages`` rendered by ``tok``'s chat template and encoded once, BOS exactly once.

    ``generation_prompt`` (default: when the last turn is not the assistant's) ends the text with the
    assistant's header and marks no target, as a prompt to complete."""
    if not getattr(tok, "chat_template", None):
        raise TokenizerError(f"{tok.name_or_path}: the tokenizer has no chat template; rows with 'messages' "
                             "need a chat tokenizer")
    messages = conversation(messages)
    generation_prompt = messages[-1]["role"] != "assistant" if generation_prompt is None else generation_prompt
    text = _render(tok, messages, generation_prompt)
    spans = [] if generation_prompt else _spans(tok, messages, text, train_on)
    prefix = [] if tok.bos_token and text.startswith(tok.bos_token) else lm_prefix(tok)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    targets = [any(end > a and start < b for a, b in spans) for start, end in enc.offset_mapping]
    return RenderedChat(prefix + list(enc.input_ids), [False] * len(prefix) + targets, text)
