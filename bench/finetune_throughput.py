"""Fine-tune step throughput: fp32 vs bf16 autocast, LoRA vs full, and model FLOP utilisation.

    python bench/finetune_throughput.py [--steps 8] [--batch 16] [--seq 32]
                                        [--out bench/results/finetune_throughput.json]

Every configuration runs in this one process, interleaved round-robin, so machine noise hits them
alike; the matmul rate (the MFU denominator) is measured in the same run for fp32 and bf16.
MFU = FLOPs per token * tokens/s / the matmul FLOP/s measured here (the peak it divides by, for the
step's precision). FLOPs per token = 2N forward + 2N for the input gradients + 2 per *trainable*
weight for the weight gradients: 6N for a full fine-tune, about 4N for LoRA (its frozen weights get
no weight gradients).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from results_page import write_results  # sibling bench module

from raykd.config import FinetuneConfig
from raykd.models.load import add_lora, count_params, load_model


def matmul_flops(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


def make_step(method: str, bf16: bool, batch: int, seq: int):
    torch.manual_seed(0)
    model = load_model("builtin:teacher", "causal_lm", 2)
    if method == "lora":
        model = add_lora(model, FinetuneConfig(), "causal_lm")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(3, 500, (batch, seq))

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - start

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return step, (count_params(model), trainable)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--out", default="bench/results/finetune_throughput.json")
    args = ap.parse_args()
    rates = {"fp32": matmul_flops(torch.float32), "bf16": matmul_flops(torch.bfloat16)}
    configs = {f"{m}-{p}": make_step(m, p == "bf16", args.batch, args.seq) for m in ("lora", "full")
               for p in ("fp32", "bf16")}
    times = {name: [] for name in configs}
    for step, _ in configs.values():
        step()  # warm-up
    for _ in range(args.steps):
        for name, (step, _) in configs.items():
            times[name].append(step())
    tokens = args.batch * args.seq
    results = {}
    for name, (_, (params, trainable)) in configs.items():
        tps = tokens / sorted(times[name])[len(times[name]) // 2]
        flops_per_token = 4 * params + 2 * trainable
        results[name] = {"tokens_per_s": tps, "params": params, "trainable": trainable,
                         "flops_per_token": flops_per_token, "mfu": flops_per_token * tps / rates[name.split("-")[1]]}
    ratios = {f"{m}_bf16_over_fp32": results[f"{m}-bf16"]["tokens_per_s"] / results[f"{m}-fp32"]["tokens_per_s"]
              for m in ("lora", "full")}
    ratios["lora_over_full_fp32"] = results["lora-fp32"]["tokens_per_s"] / results["full-fp32"]["tokens_per_s"]
    out = {"matmul_gflops": {k: v / 1e9 for k, v in rates.items()}, "results": results, "ratios": ratios,
           "batch": args.batch, "seq": args.seq, "threads": torch.get_num_threads()}
    for name, r in results.items():
        print(f"{name:10s} {r['tokens_per_s']:8.0f} tokens/s  MFU {r['mfu']:.1%}")
    print("matmul GFLOP/s:", {k: round(v, 1) for k, v in out["matmul_gflops"].items()})
    print("ratios:", {k: round(v, 2) for k, v in ratios.items()})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, out)


if __name__ == "__main__":
    main()
