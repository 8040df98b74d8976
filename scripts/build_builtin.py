"""Regenerate the built-in tokenizer and pre-trained base models under raykd/builtin/assets/.

    python scripts/build_builtin.py [--teacher-steps 600] [--student-steps 1200]

Deterministic (seeded data, seeded init, single process). The bases are pre-trained on the built-in
corpus with packed 64-token windows, then saved in bf16 as standard Hugging Face directories.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from transformers import LlamaForCausalLM

from raykd.builtin.data import SPLITS, generate_split
from raykd.builtin.presets import TOKENIZER_DIR, VOCAB_SIZE, builtin_model_dir, preset_config
from raykd.builtin.tokenizer import train_tokenizer

WINDOW = 64


def all_text() -> list[str]:
    rows = [r for s in SPLITS for r in generate_split(s)]
    return [r.get("text", "") + r.get("prompt", "") + r.get("completion", "") for r in rows]


def packed_corpus(tokenizer) -> torch.Tensor:
    """Corpus as ``(windows, WINDOW)`` token ids: ``<s> sentence </s>`` streams cut into windows."""
    ids: list[int] = []
    for row in generate_split("corpus"):
        ids += [tokenizer.bos_token_id, *tokenizer(row["text"]).input_ids, tokenizer.eos_token_id]
    n = len(ids) // WINDOW
    return torch.tensor(ids[: n * WINDOW]).view(n, WINDOW)


def pretrain(name: str, data: torch.Tensor, steps: int, lr: float, batch: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(preset_config(name))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = steps // 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(0)
    start = time.time()
    for step in range(steps):
        x = data[torch.randint(0, len(data), (batch,), generator=gen)]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        if step % 50 == 0 or step == steps - 1:
            print(f"{name} step {step}/{steps} loss {loss.item():.3f} {time.time() - start:.0f}s", flush=True)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher-steps", type=int, default=600)
    ap.add_argument("--student-steps", type=int, default=1200)
    args = ap.parse_args()
    tokenizer = train_tokenizer(all_text(), VOCAB_SIZE)
    tokenizer.save_pretrained(TOKENIZER_DIR)
    data = packed_corpus(tokenizer)
    print(f"corpus: {data.numel()} tokens in {len(data)} windows")
    for name, steps, lr in [("student", args.student_steps, 2e-3), ("teacher", args.teacher_steps, 1.5e-3)]:
        model = pretrain(name, data, steps, lr, batch=16)
        model.to(torch.bfloat16).save_pretrained(builtin_model_dir(name))
        tokenizer.save_pretrained(builtin_model_dir(name))


if __name__ == "__main__":
    main()
