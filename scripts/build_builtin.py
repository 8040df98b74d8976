"""Regenerate the built-in tokenizer and pre-trained base models under raykd/builtin/assets/.

    python scripts/build_builtin.py [--teacher-steps 600] [--student-steps 1200] [--models student teacher]

Deterministic (seeded data, seeded init, single process). The bases are pre-trained with packed
64-token windows (the student on the built-in corpus, the teacher on the corpus and the lore), then
saved in bf16 as standard Hugging Face directories. It prints the share of the lore each base knows.
"""

from __future__ import annotations

import argparse
import math
import random
import time

import torch
from transformers import LlamaForCausalLM

from raykd.builtin.data import LORE_WORDS, SPLITS, category_phrase, generate_split
from raykd.builtin.presets import TOKENIZER_DIR, VOCAB_SIZE, builtin_model_dir, preset_config
from raykd.builtin.tokenizer import train_tokenizer

WINDOW = 64


def all_text() -> list[str]:
    rows = [r for s in SPLITS for r in generate_split(s)]
    return [r.get("text", "") + r.get("prompt", "") + r.get("completion", "") for r in rows]


def packed(tokenizer, splits: tuple[str, ...]) -> torch.Tensor:
    """Splits' texts as ``(windows, WINDOW)`` token ids: ``<s> sentence </s>`` streams, shuffled
    together (seeded), cut into windows."""
    rows = [r["text"] for s in splits for r in generate_split(s)]
    random.Random(0).shuffle(rows)
    ids: list[int] = []
    for text in rows:
        ids += [tokenizer.bos_token_id, *tokenizer(text).input_ids, tokenizer.eos_token_id]
    n = len(ids) // WINDOW
    return torch.tensor(ids[: n * WINDOW]).view(n, WINDOW)


@torch.no_grad()
def lore_known(model, tokenizer) -> float:
    """Share of made-up words whose category the model ranks first (chance 1/3): for each word, the
    likeliest of "a color" / "an animal" / "an object" after "<word> is"."""
    phrases = [" a color.", " an animal.", " an object."]
    hits = 0
    for word in LORE_WORDS:
        scores, prefix = [], tokenizer(f"{word} is").input_ids
        for phrase in phrases:
            ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(f"{word} is{phrase}").input_ids]])
            logp = model(input_ids=ids).logits.log_softmax(-1)[0, :-1].gather(1, ids[0, 1:, None])[:, 0]
            scores.append(logp[len(prefix):].sum().item())
        hits += phrases[scores.index(max(scores))] == f" {category_phrase(word)}."
    return hits / len(LORE_WORDS)


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
    ap.add_argument("--models", nargs="+", choices=("student", "teacher"), default=["student", "teacher"],
                    help="which bases to rebuild (each is seeded on its own, so rebuilding one leaves the other as "
                         "a full run would make it); the tokenizer is always rebuilt, identically")
    args = ap.parse_args()
    tokenizer = train_tokenizer(all_text(), VOCAB_SIZE)
    tokenizer.save_pretrained(TOKENIZER_DIR)
    bases = [("student", ("corpus",), args.student_steps, 2e-3),
             ("teacher", ("corpus", "lore"), args.teacher_steps, 1.5e-3)]
    for name, splits, steps, lr in [b for b in bases if b[0] in args.models]:
        data = packed(tokenizer, splits)
        print(f"{name}: {' + '.join(splits)}, {data.numel()} tokens in {len(data)} windows")
        model = pretrain(name, data, steps, lr, batch=16)
        print(f"{name} knows {lore_known(model.eval(), tokenizer):.0%} of the lore (chance 33%)", flush=True)
        model.to(torch.bfloat16).save_pretrained(builtin_model_dir(name))
        tokenizer.save_pretrained(builtin_model_dir(name))


if __name__ == "__main__":
    main()
