"""The 70B path's pieces on one CUDA GPU, one line per check: sharded loading, FSDP2 bf16 mixed precision,
activation checkpointing, DCP save/restore, the fused distillation loss and the cache scorer's top-k.

    python scripts/gpu_check.py                 # on a GPU machine: torch, transformers and peft only (no Ray)
    python scripts/gpu_check.py --device cpu    # the same checks on the CPU (gloo), to try the script here

One GPU means one FSDP2 rank (NCCL refuses two ranks on one device): the code paths are the multi-rank
ones (DTensor shards laid out on the meta device, ``to_empty`` on CUDA, rows copied from the files,
``MixedPrecisionPolicy``), with the whole model as the one shard. Multi-rank sharding is tested on CPU
(tests/raykd/models/test_sharded_load.py). Exits 1 if any check fails; ~2 minutes on an H100.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed

from raykd.config import FinetuneConfig  # noqa: E402
from raykd.losses import distillation_loss, fused_distillation_loss, summarize_teacher  # noqa: E402
from raykd.models.load import add_lora, fully_shard_model, load_model  # noqa: E402
from raykd.models.sharded_load import load_sharded  # noqa: E402
from raykd.training.checkpoints import LoopState, restore_checkpoint, save_checkpoint  # noqa: E402

RESULTS: list[bool] = []


def check(name: str, ok: bool, detail: str) -> None:
    RESULTS.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)


def guarded(name: str, fn, *args) -> None:
    """Run one check; an exception is that check's FAIL line, and the others still run."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 (any failure is reported, not raised)
        check(name, False, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def build_model(directory: str, layers: int, hidden: int) -> None:
    """A random-init Llama saved as safetensors (what a base model directory holds)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=int(hidden * 2.75),
                         num_hidden_layers=layers, num_attention_heads=hidden // 128, num_key_value_heads=hidden // 512,
                         max_position_embeddings=1024)
    LlamaForCausalLM(config).save_pretrained(directory)


def lora_builder(directory: str):
    def build(weights: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        model = load_model(directory, "causal_lm", 2, weights=weights)
        return add_lora(model, FinetuneConfig(lora_target_modules=["all-linear"], lora_dropout=0.0), "causal_lm")
    return build


def sharded(directory: str, device: torch.device, bf16: bool, checkpointing: bool) -> torch.nn.Module:
    return load_sharded(lambda: lora_builder(directory)(False), directory,
                        lambda m: fully_shard_model(m, device, 1, checkpointing, bf16), device, 0, 1, 0)


def check_sharded_load(directory: str, device: torch.device, ids: torch.Tensor) -> None:
    reset_peak(device)
    started = time.time()
    model = sharded(directory, device, bf16=False, checkpointing=False).eval()
    seconds, peak = time.time() - started, peak_gib(device)
    whole = lora_builder(directory)(True).to(device).eval()
    with torch.no_grad():
        diff = (model(input_ids=ids).logits - whole(input_ids=ids).logits).abs().max().item()
    check("sharded load", diff < 1e-3, f"logits vs transformers' whole model max |diff| {diff:.2e}; "
          f"{seconds:.1f} s, peak {peak:.2f} GiB on {device}")


class Latest:
    """A checkpoint to resume from, as Ray's ``Checkpoint`` offers it."""

    def __init__(self, path: Path):
        self.path = path

    def as_directory(self):
        return nullcontext(str(self.path))


class Session:
    """What the checkpoint functions report to (Ray Train's session, here a directory)."""

    def __init__(self, directory: Path, latest: Path | None):
        self.rank, self.world, self.directory = 0, 1, directory
        self.latest = None if latest is None else Latest(latest)

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        if checkpoint_dir:
            import shutil

            shutil.copytree(checkpoint_dir, self.directory, dirs_exist_ok=True)


def train_steps(model, ids: torch.Tensor, steps: int) -> tuple[torch.optim.Optimizer, list[float]]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return optimizer, losses


def check_training(directory: str, device: torch.device, tmp: Path) -> None:
    ids = torch.randint(0, 32000, (4, 512), generator=torch.Generator().manual_seed(1)).to(device)
    peaks = {}
    for checkpointing in (False, True):
        model = sharded(directory, device, bf16=device.type == "cuda", checkpointing=checkpointing).train()
        reset_peak(device)
        optimizer, losses = train_steps(model, ids, 3)
        peaks[checkpointing] = peak_gib(device)
        del model, optimizer
    ok = all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    check("bf16 mixed precision (FSDP2 MixedPrecisionPolicy)", ok, f"3 LoRA steps, loss {losses[0]:.3f} -> "
          f"{losses[-1]:.3f} (bf16 {'on' if device.type == 'cuda' else 'off: CPU'})")
    saved = device.type != "cuda" or peaks[True] < peaks[False]
    check("activation checkpointing", saved, f"training peak {peaks[True]:.2f} GiB with, {peaks[False]:.2f} without")

    model = sharded(directory, device, bf16=False, checkpointing=False).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer, _ = train_steps(model, ids[:1, :64], 2)
    save_checkpoint(model, optimizer, trainable, LoopState(step=2), {}, Session(tmp / "ckpt", None))
    fresh = sharded(directory, device, bf16=False, checkpointing=False)
    fresh_optimizer = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=1e-3)
    state = restore_checkpoint(fresh, fresh_optimizer, trainable, Session(tmp / "unused", tmp / "ckpt"))
    same = all(torch.equal(a.full_tensor(), b.full_tensor()) for (n, a), (_, b)
               in zip(model.named_parameters(), fresh.named_parameters()) if n in trainable)
    files = sorted(p.name for p in (tmp / "ckpt").iterdir())
    check("DCP save/restore", same and state.step == 2, f"trainable weights equal after restore; files {files}")


def check_fused_loss(device: torch.device) -> None:
    torch.manual_seed(0)
    n, vocab, hidden_size = 4096, 32000, 1024
    hidden = torch.randn(n, hidden_size, device=device, requires_grad=True)
    weight = (torch.randn(vocab, hidden_size, device=device) / hidden_size ** 0.5).requires_grad_()
    labels = torch.randint(0, vocab, (n,), device=device)
    teacher = summarize_teacher(torch.randn(n, vocab, device=device) * 3, 16, 32)
    results = {}
    for fused in (False, True):
        reset_peak(device)
        if fused:
            loss = fused_distillation_loss(hidden, weight, labels, teacher, 0.5, 2.0, 1024)["loss"]
        else:
            loss = distillation_loss(hidden @ weight.T, labels, teacher, 0.5, 2.0, 1024)["loss"]
        loss.backward()
        results[fused] = (loss.item(), hidden.grad.clone(), peak_gib(device))
        hidden.grad = weight.grad = None
    same = abs(results[True][0] - results[False][0]) < 1e-4 and torch.allclose(results[True][1], results[False][1],
                                                                              atol=1e-5)
    check("fused distillation loss", same, f"loss {results[True][0]:.5f} vs unfused {results[False][0]:.5f}; peak "
          f"{results[True][2]:.2f} vs {results[False][2]:.2f} GiB at {n} tokens x {vocab}")


def check_cache_scorer(device: torch.device) -> None:
    torch.manual_seed(0)
    logits = torch.randn(512, 32000) * 3
    gpu = summarize_teacher(logits.to(device), 16, 32)
    cpu = summarize_teacher(logits, 16, 32)
    same = torch.equal(gpu["indices"].cpu(), cpu["indices"]) and torch.allclose(gpu["values"].cpu(), cpu["values"],
                                                                                 atol=1e-4)
    check("cache scorer top-k", same, f"top-16 of 512 x 32000 logits on {device} equal to the CPU's")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=2048)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("FAIL  no CUDA device (use --device cpu to try the checks here)")
        return 1
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}", flush=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = os.path.join(tmp, "model")
            build_model(directory, args.layers, args.hidden)
            ids = torch.arange(64, device=device).reshape(2, 32)
            guarded("sharded load", check_sharded_load, directory, device, ids)
            guarded("training (bf16, activation checkpointing, DCP)", check_training, directory, device, Path(tmp))
        guarded("fused distillation loss", check_fused_loss, device)
        guarded("cache scorer top-k", check_cache_scorer, device)
    finally:
        dist.destroy_process_group()
    print(f"{sum(RESULTS)}/{len(RESULTS)} checks passed", flush=True)
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
