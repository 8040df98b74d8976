"""The CPU (and plain-GPU) engine: a transformers causal LM that decodes concurrent requests together.

Concurrent calls to ``stream`` are gathered by ``@serve.batch`` into one left-padded batch; the batch
is prefilled once and decoded one token per step with the KV cache, and every step's new text goes
back to each caller as it is made (streaming). Rows that finish (end of sequence or their
``max_tokens``) stop receiving chunks while the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import torch
from ray import serve

from raykd.tokens import load_tokenizer, stop_token_ids
from serving.sampling import next_tokens, visible_text


@dataclass
class GenerationRequest:
    """What an arm is asked to generate. ``seed`` and ``logprobs`` (top-N alternatives per generated
    token) are vLLM's; the router refuses them for a transformers arm."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None


def chunk(text: str, new_tokens: int, finish_reason: str | None, logprobs: list[dict] | None = None) -> dict:
    """What an engine yields per step: new text, tokens it took, why the request ended (or None), and
    per new token ``{"token", "logprob", "top": [(text, logprob)]}`` when log-probs were asked for."""
    return {"text": text, "new_tokens": new_tokens, "finish_reason": finish_reason, "logprobs": logprobs}


class TransformersEngine:
    def __init__(self, model_dir: str, tokenizer_dir: str, max_batch_size: int, batch_wait_s: float,
                 trust_remote_code: bool = False):
        from transformers import AutoModelForCausalLM

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        self.model = model.to(self.device).eval()
        self.tokenizer = load_tokenizer(tokenizer_dir, trust_remote_code)
        self.stop_ids = set(stop_token_ids(self.model, self.tokenizer))  # generation_config's list, and EOS
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_s)
        self.batches, self.largest_batch = 0, 0

    def stats(self) -> dict:
        return {"engine": "transformers", "device": str(self.device), "batches": self.batches,
                "largest_batch": self.largest_batch}

    def check_health(self) -> None:
        """Raise if the model cannot run a forward pass."""
        with torch.no_grad():
            self.model(input_ids=torch.tensor([[self.tokenizer.eos_token_id]], device=self.device))

    @torch.no_grad()
    def decode_steps(self, requests: list[GenerationRequest]) -> Iterator[list[dict | None]]:
        """Per decoding step, one chunk per request (None once it has finished); ends when all have."""
        pad = self.tokenizer.pad_token_id
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in requests], device=self.device)
        mask = (torch.arange(width, device=self.device)[None, :] >= torch.tensor(
            [width - len(r.prompt_ids) for r in requests], device=self.device)[:, None]).long()
        temperature = torch.tensor([r.temperature for r in requests], device=self.device)
        top_p = torch.tensor([r.top_p for r in requests], device=self.device)
        generated: list[list[int]] = [[] for _ in requests]
        texts = [""] * len(requests)
        done = [False] * len(requests)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        past, step_ids = None, ids
        while not all(done):
            out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=positions, past_key_values=past,
                             use_cache=True)
            past = out.past_key_values
            tokens = next_tokens(out.logits[:, -1], temperature, top_p)
            chunks: list[dict | None] = []
            for i, token in enumerate(tokens.tolist()):
                if done[i]:
                    chunks.append(None)
                    continue
                generated[i].append(token)
                full = len(generated[i]) >= requests[i].max_tokens
                finish = "stop" if token in self.stop_ids else ("length" if full else None)
                text, stopped = visible_text(self.tokenizer.decode(generated[i], skip_special_tokens=True),
                                             requests[i].stop, finish is not None)
                finish = "stop" if stopped else finish
                new = text[len(texts[i]):]
                texts[i] += new
                done[i] = finish is not None
                chunks.append(chunk(new, 1, finish))
            yield chunks
            step_ids = tokens[:, None]
            mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
            positions = positions[:, -1:] + 1

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched(self, requests: list[GenerationRequest]) -> AsyncIterator[list]:
        self.batches, self.largest_batch = self.batches + 1, max(self.largest_batch, len(requests))
        steps = self.decode_steps(requests)
        # forward passes run in a thread so the replica keeps answering health checks meanwhile
        while (chunks := await asyncio.to_thread(next, steps, None)) is not None:
            yield [StopIteration if c is None else c for c in chunks]

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        async for c in self._batched(request):
            yield c
