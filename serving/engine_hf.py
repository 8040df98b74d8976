"""The CPU (and plain-GPU) engine: a transformers causal LM that decodes concurrent requests together.

Continuous batching: one decoding loop per replica keeps a running batch (``serving.kv_batch``). Between
steps, waiting requests are prefilled and join it (up to ``serve.max_batch_size`` rows) and finished or
abandoned ones leave, so a request never waits for another batch to end and a client that disconnects
frees its row at the next step. Every step's new text goes back to each caller as it is made. Forward
passes and detokenisation run in a worker thread, so the replica's event loop keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import torch

from raykd.data.tokens import load_tokenizer, stop_token_ids
from serving.chunks import chunk
from serving.kv_batch import DecodeBatch, joinable, merge, select
from serving.sampling import next_tokens, visible_text


@dataclass
class GenerationRequest:
    """What an arm is asked to generate. ``seed``, ``logprobs`` (top-N alternatives per generated token)
    and ``vllm_sampling`` (``serving.protocol.VLLM_ONLY``) are vLLM's; the router refuses them for a
    transformers arm. ``ignore_eos``: the model's stop ids end nothing (``stop_token_ids`` still do);
    ``min_tokens``: no stop id is drawn before that many tokens."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    stop_token_ids: list[int] = field(default_factory=list)
    vllm_sampling: dict = field(default_factory=dict)


@dataclass
class Row:
    """One request in the engine: its tokens and text so far, and the queue its caller reads chunks
    (or the exception that ended it) from."""

    request: GenerationRequest
    out: asyncio.Queue
    stop_ids: frozenset[int] = frozenset()  # the ids that end this request
    generated: list[int] = field(default_factory=list)
    text: str = ""
    done: bool = False
    abandoned: bool = False


def held_back(logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
    """``(B, V)`` next-token logits with each row's stop ids ruled out while it has fewer than its
    ``min_tokens`` (vLLM's ``min_tokens``); the same tensor when no row asks for it."""
    vocab = logits.shape[-1]  # a stop id past the vocabulary is never drawn anyway
    early = [(i, [t for t in sorted(row.stop_ids) if t < vocab]) for i, row in enumerate(rows)
             if len(row.generated) < row.request.min_tokens and row.stop_ids]
    for i, ids in early:
        logits[i, ids] = float("-inf")
    return logits


class TransformersEngine:
    def __init__(self, model_dir: str, tokenizer_dir: str, max_batch_size: int, trust_remote_code: bool = False):
        from transformers import AutoModelForCausalLM

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        self.model = model.to(self.device).eval()
        self.tokenizer = load_tokenizer(tokenizer_dir, trust_remote_code)
        self.stop_ids = set(stop_token_ids(self.model, self.tokenizer))  # generation_config's list, EOS, end of turn
        self.max_batch_size = max_batch_size
        self.waiting: deque[Row] = deque()
        self.batch: DecodeBatch | None = None
        self.loop: asyncio.Task | None = None
        self.steps, self.largest_batch, self.joined = 0, 0, 0

    def stats(self) -> dict:
        """Steps decoded, the largest batch, and how many requests joined a batch already decoding."""
        return {"engine": "transformers", "device": str(self.device), "steps": self.steps,
                "largest_batch": self.largest_batch, "joined_running_batch": self.joined,
                "running": len(self.batch) if self.batch else 0, "waiting": len(self.waiting)}

    def check_health(self) -> None:
        """Raise if the model cannot run a forward pass."""
        with torch.no_grad():
            self.model(input_ids=torch.tensor([[self.tokenizer.eos_token_id]], device=self.device))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        """Chunks of ``request``'s completion as the decoding loop makes them."""
        stops = set(request.stop_token_ids) | (set() if request.ignore_eos else self.stop_ids)
        row = Row(request, asyncio.Queue(), frozenset(stops))
        self.waiting.append(row)
        if self.loop is None or self.loop.done():
            self.loop = asyncio.create_task(self._decode_loop())
        try:
            while True:
                c = await row.out.get()
                if isinstance(c, Exception):
                    raise c
                yield c
                if c["finish_reason"] is not None:
                    return
        finally:
            row.abandoned = True  # a caller gone mid-answer: the loop drops its row at the next step

    async def _decode_loop(self) -> None:
        """Steps the running batch while any request is running or waiting."""
        while self.waiting or self.batch is not None:
            admitted = self._admit()
            if not admitted and self.batch is None:  # only abandoned requests were waiting
                continue
            try:
                made = await asyncio.to_thread(self.advance, admitted)
            except Exception as error:  # a failed forward pass ends the requests it held, not the replica
                for row in dict.fromkeys(admitted + (self.batch.rows if self.batch else [])):
                    row.out.put_nowait(error)
                self.batch = None
                continue
            for row, c in made:
                row.out.put_nowait(c)

    def _admit(self) -> list[Row]:
        """Waiting requests that start now: as many as there are free rows, and only into an empty
        batch when the model's cache cannot take rows mid-flight."""
        running = len(self.batch) if self.batch else 0
        if running and not joinable(self.batch.cache):
            return []
        admitted = []
        while self.waiting and running + len(admitted) < self.max_batch_size:
            row = self.waiting.popleft()
            if not row.abandoned:
                admitted.append(row)
        self.joined += len(admitted) if running else 0
        return admitted

    @torch.no_grad()
    def advance(self, admitted: list[Row]) -> list[tuple[Row, dict]]:
        """One step: the running rows decode a token, the ``admitted`` ones are prefilled (their first
        token) and join; finished and abandoned rows leave. Returns each row's new chunk."""
        made: list[tuple[Row, int]] = []
        if self.batch is not None:
            made += zip(self.batch.rows, self._decode(self.batch).tolist())
        if admitted:
            joining, first = self._prefill(admitted)
            made += zip(admitted, first.tolist())
            self.batch = joining if self.batch is None else merge(self.batch, joining)
        self.steps, self.largest_batch = self.steps + 1, max(self.largest_batch, len(self.batch))
        chunks = [(row, self._next_chunk(row, token)) for row, token in made]
        keep = [i for i, row in enumerate(self.batch.rows) if not (row.done or row.abandoned)]
        self.batch = select(self.batch, keep) if keep else None
        return chunks

    def _prefill(self, rows: list[Row]) -> tuple[DecodeBatch, torch.Tensor]:
        """A batch of ``rows`` after the forward pass of their left-padded prompts, and each row's first
        token ``(n,)``."""
        prompts = [r.request.prompt_ids for r in rows]
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        starts = torch.tensor([width - len(p) for p in prompts], device=self.device)
        mask = (torch.arange(width, device=self.device)[None, :] >= starts[:, None]).long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        temperature = torch.tensor([r.request.temperature for r in rows], device=self.device)
        top_p = torch.tensor([r.request.top_p for r in rows], device=self.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        first = next_tokens(held_back(out.logits[:, -1], rows), temperature, top_p)
        return DecodeBatch(out.past_key_values, mask, positions[:, -1:] + 1, first[:, None], temperature, top_p,
                           rows), first

    def _decode(self, batch: DecodeBatch) -> torch.Tensor:
        """One forward pass of every row's latest token; the next tokens ``(B,)`` (``batch`` advances)."""
        batch.mask = torch.cat([batch.mask, torch.ones_like(batch.last)], dim=1)
        out = self.model(input_ids=batch.last, attention_mask=batch.mask, position_ids=batch.positions,
                         past_key_values=batch.cache, use_cache=True)
        tokens = next_tokens(held_back(out.logits[:, -1], batch.rows), batch.temperature, batch.top_p)
        batch.last, batch.positions = tokens[:, None], batch.positions + 1
        return tokens

    def _next_chunk(self, row: Row, token: int) -> dict:
        """Record ``token`` for ``row``: the new visible text and, once it ends, why."""
        row.generated.append(token)
        request = row.request
        full = len(row.generated) >= request.max_tokens
        finish = "stop" if token in row.stop_ids else ("length" if full else None)
        text, stopped = visible_text(self.tokenizer.decode(row.generated, skip_special_tokens=True),
                                     request.stop, finish is not None)
        finish = "stop" if stopped else finish
        new = text[len(row.text):]
        row.text += new
        row.done = finish is not None
        return chunk(new, 1, finish)
