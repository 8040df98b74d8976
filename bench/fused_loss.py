"""The fused LM head + distillation loss vs the unfused loss: peak memory and step time, each
configuration in a fresh process.

    python bench/fused_loss.py [--tokens 8192] [--vocab 32000] [--hidden 512] [--out bench/results/fused_loss.json]

A step is forward + backward of ``alpha * KD + (1 - alpha) * CE`` (alpha 0.5, T 2) from a cached
teacher summary (top-16 + 32 tail samples, ``raykd.losses``) through the student's LM head:
unfused = ``F.linear`` over all rows then ``distillation_loss`` (the logits of the batch are held for
backward); fused = ``fused_distillation_loss`` (head and loss a chunk at a time, recomputed in
backward). Memory: peak RSS growth over the step (``ru_maxrss``). Time: median of 3 steps after it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from results_page import write_results  # sibling bench module

PROBE = """
import json, resource, sys, time, torch
import torch.nn.functional as F
from raykd.losses import distillation_loss, fused_distillation_loss, summarize_teacher
mode, n, vocab, hidden_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
torch.set_num_threads(2)
hidden = torch.randn(n, hidden_size, requires_grad=True)
weight = (torch.randn(vocab, hidden_size) / hidden_size ** 0.5).requires_grad_()
labels = torch.randint(0, vocab, (n,))
parts = [summarize_teacher(torch.randn(1024, vocab) * 3, 16, 32) for _ in range(0, n, 1024)]
teacher = {k: torch.cat([p[k] for p in parts])[:n] for k in parts[0]}

def step(hidden, weight, labels, teacher):
    if mode == "fused":
        loss = fused_distillation_loss(hidden, weight, labels, teacher, 0.5, 2.0, 1024)["loss"]
    else:
        loss = distillation_loss(F.linear(hidden, weight), labels, teacher, 0.5, 2.0, 1024)["loss"]
    loss.backward()
    hidden.grad = weight.grad = None
    return loss.item()

# warm-up on 8 rows: lazy imports and allocator pools are not the loss's memory
step(hidden[:8].detach().requires_grad_(), weight, labels[:8], {k: v[:8] for k, v in teacher.items()})
args = (hidden, weight, labels, teacher)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
value = step(*args)
peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
times = []
for _ in range(3):
    started = time.perf_counter()
    step(*args)
    times.append(time.perf_counter() - started)
print(json.dumps({"peak_mib": peak_mib, "step_s": sorted(times)[1], "loss": value}))
"""


def probe(mode: str, tokens: int, vocab: int, hidden: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(tokens), str(vocab), str(hidden)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fused_loss.json"))
    args = parser.parse_args()
    figures = {mode: probe(mode, args.tokens, args.vocab, args.hidden) for mode in ("unfused", "fused")}
    report = {"tokens": args.tokens, "vocab": args.vocab, "hidden": args.hidden, **figures,
              "memory_ratio": figures["fused"]["peak_mib"] / figures["unfused"]["peak_mib"],
              "time_ratio": figures["fused"]["step_s"] / figures["unfused"]["step_s"],
              "same_loss": abs(figures["fused"]["loss"] - figures["unfused"]["loss"]) <= 1e-4 * abs(
                  figures["unfused"]["loss"])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, report)
    print(f"{args.tokens} tokens x vocab {args.vocab}: peak {figures['unfused']['peak_mib']:.0f} MiB unfused vs "
          f"{figures['fused']['peak_mib']:.0f} MiB fused ({report['memory_ratio']:.1%}); step "
          f"{figures['unfused']['step_s']:.2f}s vs {figures['fused']['step_s']:.2f}s ({report['time_ratio']:.2f}x); "
          f"same loss: {report['same_loss']} -> {args.out}")


if __name__ == "__main__":
    main()
