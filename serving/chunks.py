"""What an engine yields per decoding step, and how steps are merged into fewer messages. Pure: no Ray.

Every message from a replica to the router (and every server-sent event the router writes) costs a hop
through Ray's streaming machinery on the same CPUs that run the model, so a replica merges the steps
made within ``serve.stream_interval_s`` into one message, and answers a request that is not streamed
with a single merged message.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable


def chunk(text: str, new_tokens: int, finish_reason: str | None, logprobs: list[dict] | None = None) -> dict:
    """What an engine yields per step: new text, tokens it took, why the request ended (or None), and
    per new token ``{"token", "logprob", "top": [(text, logprob)]}`` when log-probs were asked for."""
    return {"text": text, "new_tokens": new_tokens, "finish_reason": finish_reason, "logprobs": logprobs}


def merge(chunks: list[dict]) -> dict:
    """One chunk saying what ``chunks`` say in order (an empty list: an empty chunk)."""
    asked = any(c["logprobs"] is not None for c in chunks)
    return chunk("".join(c["text"] for c in chunks), sum(c["new_tokens"] for c in chunks),
                 next((c["finish_reason"] for c in reversed(chunks) if c["finish_reason"]), None),
                 [e for c in chunks for e in c["logprobs"] or []] if asked else None)


async def coalesce(chunks: AsyncIterator[dict], interval_s: float,
                   clock: Callable[[], float] = time.monotonic) -> AsyncIterator[dict]:
    """``chunks`` merged so that after the first (sent at once: time to first token is unchanged) at
    most one message goes out per ``interval_s``; the last one always goes out. 0 passes every chunk on."""
    pending: list[dict] = []
    sent_at = None
    async for c in chunks:
        pending.append(c)
        now = clock()
        if sent_at is None or c["finish_reason"] is not None or now - sent_at >= interval_s:
            yield merge(pending)
            pending, sent_at = [], now
    if pending:
        yield merge(pending)
