"""Inference speed of models measured side by side: batch-1 latency (p50) and batched throughput.

Models are timed interleaved (A, B, A, B, ...) in one process so machine noise hits both alike.
A causal LM generates exactly ``new_tokens`` tokens; a classifier runs one forward pass.
"""

from __future__ import annotations

import statistics
import time

import torch


@torch.no_grad()
def _run(model, ids: torch.Tensor, task: str, new_tokens: int, pad_token_id: int) -> float:
    start = time.perf_counter()
    if task == "causal_lm":
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_token_id)
    else:
        model(input_ids=ids)
    return time.perf_counter() - start


def compare_speed(models: dict[str, torch.nn.Module], prompt_ids: list[int], task: str, pad_token_id: int,
                  new_tokens: int = 16, repeats: int = 15, batch: int = 32) -> dict[str, dict[str, float]]:
    """Per model: ``latency_p50_s`` (batch 1), ``throughput_per_s`` (tokens/s for a causal LM, examples/s for a
    classifier; batch ``batch``)."""
    one = torch.tensor([prompt_ids])
    many = one.repeat(batch, 1)
    for model in models.values():  # warm-up: first calls pay allocation and kernel selection
        model.eval()
        _run(model, one, task, new_tokens, pad_token_id)
    latency = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            latency[name].append(_run(model, one, task, new_tokens, pad_token_id))
    out = {}
    for name, model in models.items():
        seconds = min(_run(model, many, task, new_tokens, pad_token_id) for _ in range(2))
        produced = batch * (new_tokens if task == "causal_lm" else 1)
        out[name] = {"latency_p50_s": statistics.median(latency[name]), "throughput_per_s": produced / seconds}
    return out
