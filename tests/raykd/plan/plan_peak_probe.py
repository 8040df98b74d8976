"""Measures, in a fresh process (the peak RSS is per process), what raykd.plan.capacity estimates; run by
tests/raykd/plan/test_planner.py.

    python tests/raykd/plan/plan_peak_probe.py train   # two fp32 AdamW steps of a small Llama: peak vs estimate
    python tests/raykd/plan/plan_peak_probe.py loss    # the fused KD loss on one chunk: peak in (chunk, V) fp32 units

Prints one JSON line.
"""

from __future__ import annotations

import json
import sys

import psutil
import torch


def reset_peak_rss() -> None:
    """Start the peak afresh from the current RSS (Linux >= 4.0), so what the process did before the
    measured call (imports, building inputs) cannot be its peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss() -> int:
    """The peak RSS since the last ``reset_peak_rss`` (VmHWM)."""
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024  # kB


def train_probe() -> dict:
    """Peak of two training steps (the second holds AdamW's state) against ``training_memory``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from raykd.plan.arch import model_shape
    from raykd.plan.capacity import HF_LOSS_COPIES, TrainSetup, training_memory

    batch, seq = 8, 256
    model = LlamaForCausalLM(LlamaConfig(hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
                                         num_attention_heads=8, vocab_size=8000, max_position_embeddings=seq,
                                         tie_word_embeddings=False))
    shape = model_shape("probe", model)
    ids = torch.randint(0, 8000, (batch, seq))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    baseline = psutil.Process().memory_info().rss - 4 * shape.params  # the weights belong to the estimate
    reset_peak_rss()
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    setup = TrainSetup(workers=1, sharding="none", bf16=False, tokens=batch * seq, trainable=shape.params,
                       trainable_linear=shape.linear_params, loss_tokens=batch * seq, loss_copies=HF_LOSS_COPIES,
                       on_gpu=False)
    return {"measured": peak_rss() - baseline, "estimate": sum(training_memory(shape, setup).values())}


def loss_probe() -> dict:
    """Peak of ``fused_distillation_loss`` forward + backward on one chunk, in ``(chunk, V)`` fp32 units
    (the second call's: the gradients it makes are part of the peak)."""
    from raykd.losses import fused_distillation_loss, summarize_teacher

    chunk, vocab, hidden = 1024, 32000, 64
    with torch.no_grad():  # the teacher summary a few rows at a time, so its peak stays below the loss's
        parts = [summarize_teacher(torch.randn(64, vocab), 16, 32, torch.Generator().manual_seed(i))
                 for i in range(chunk // 64)]
    teacher = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    states = torch.randn(chunk, hidden, requires_grad=True)
    head = (torch.randn(vocab, hidden) * 0.02).requires_grad_(True)
    labels = torch.randint(0, vocab, (chunk,))
    def step() -> None:
        fused_distillation_loss(states, head, labels, teacher, 0.5, 2.0, chunk_tokens=chunk)["loss"].backward()
        states.grad, head.grad = None, None

    step()  # first touches of code pages and lazily made buffers are not the loss's memory
    before = psutil.Process().memory_info().rss
    reset_peak_rss()
    step()
    return {"fused_loss_copies": (peak_rss() - before) / (chunk * vocab * 4)}


if __name__ == "__main__":
    torch.manual_seed(0)
    torch.set_num_threads(1)
    print(json.dumps(train_probe() if sys.argv[1] == "train" else loss_probe()))
