"""Memory of the 70B path at small scale: per-rank peak while loading and while training a randomly
initialised Llama whose weights dominate (~370M parameters, saved as safetensors), 1 rank (the whole
model, as transformers loads it) vs 2 gloo ranks (``raykd.models.sharded_load``: each reads only its rows);
checkpoint bytes each rank writes (DCP, trainable state only) vs the full state dict; export peak,
streamed vs the whole model merged in memory.

    python bench/sharded_memory.py [--layers 24] [--hidden 1024] [--out bench/results/sharded_memory.json]

Every configuration runs in a fresh process. A peak is the process's resident high-water mark (VmHWM,
reset through ``/proc/self/clear_refs`` before each phase) less its resident size once torch,
transformers and peft were imported: what the model and the phase hold. "Load" ends once every weight
the process holds was read (transformers maps safetensors lazily: weights become resident when first
used); training is two LoRA steps on 1 x 32 tokens, so weights, not activations, dominate. LoRA on
every linear layer of the blocks (r 16). The probes run with ``MALLOC_MMAP_THRESHOLD_=65536``: glibc
otherwise keeps each freed FSDP2 all-gather buffer in its heap (measured: +1.2 GiB of RSS over one
forward pass of the 2-rank model), which is the allocator's retention, not memory the code holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from results_page import write_results  # sibling bench module

MIB = 1 << 20
LORA = ["all-linear"]


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


IMPORTED_MIB = 0.0  # resident size once the libraries are imported, set by each probe


def peak_mib() -> float:
    """The high-water mark since the last ``reset_peak``, less the imported libraries' resident size."""
    return _status_mib("VmHWM") - IMPORTED_MIB


def start_probe() -> None:
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    global IMPORTED_MIB
    IMPORTED_MIB = _status_mib("VmRSS")
    reset_peak()


def touch(model) -> None:
    """Read every weight this process holds (its shards, or the whole model), so lazily mapped weights
    count as they will once used."""
    from torch.distributed.tensor import DTensor

    for p in model.parameters():
        (p.to_local() if isinstance(p, DTensor) else p).detach().sum()


def build_model(out: str, layers: int, hidden: int) -> int:
    """A random-init Llama saved as safetensors; returns its fp32 bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=int(hidden * 2.75),
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128,
                         max_position_embeddings=256, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters()) * 4


def lora(weights: bool, directory: str):
    import torch

    from raykd.config import FinetuneConfig
    from raykd.models.load import add_lora, load_model

    torch.manual_seed(0)
    return add_lora(load_model(directory, "causal_lm", 2, weights=weights),
                    FinetuneConfig(lora_target_modules=LORA, lora_dropout=0.0), "causal_lm")


def train_and_checkpoint(model, trainable: set[str], checkpoint: str, rank: int) -> dict:
    """Two LoRA steps on 1 x 32 tokens, then a DCP checkpoint of the trainable state."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from raykd.training.checkpoints import trainable_state

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 32000, (1, 32), generator=torch.Generator().manual_seed(rank))
    reset_peak()
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    train = peak_mib()
    dcp.save({"model": trainable_state(model, trainable), "optim": get_optimizer_state_dict(model, optimizer)},
             checkpoint_id=checkpoint)
    written = os.path.getsize(os.path.join(checkpoint, f"__{rank}_0.distcp"))
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)  # global sizes
    return {"train_peak_mib": train, "checkpoint_bytes": written, "trainable_params": trainable_params}


def probe_whole(directory: str, checkpoint: str) -> dict:
    start_probe()
    model = lora(True, directory)
    touch(model)
    load = peak_mib()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {"load_peak_mib": load} | train_and_checkpoint(model, trainable, checkpoint, 0)


def _sharded_rank(rank: int, port: int, directory: str, checkpoint: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    from raykd.models.load import fully_shard_model
    from raykd.models.sharded_load import load_sharded

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    cpu = torch.device("cpu")
    start_probe()
    model = load_sharded(lambda: lora(False, directory), directory,
                         lambda m: fully_shard_model(m, cpu, 2, False, False), cpu, rank, 2, 0)
    touch(model)
    load = peak_mib()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    result = {"load_peak_mib": load} | train_and_checkpoint(model, trainable, checkpoint, rank)
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def probe_sharded(directory: str, checkpoint: str) -> dict:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_sharded_rank, args=(port, directory, checkpoint, out), nprocs=2)
        return {"ranks": [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(2)]}


EXPORT_SHARD_MIB = 128  # output shards of a 1.3 GiB model, as 2 GiB shards are of a 140 GB one


def probe_export(directory: str, checkpoint: str, streamed: bool) -> dict:
    """The LoRA-merged HF directory from the 2-rank checkpoint: streamed (``raykd.models.export.export_model``),
    or whole (the model rebuilt, merged in memory and saved, as raykd exported before and still does for
    a random-init preset)."""
    from raykd.builtin.presets import TOKENIZER_DIR
    from raykd.config import ModelsConfig
    from raykd.models.export import export_model
    from raykd.models.load import save_model
    from raykd.training.checkpoints import load_trainable

    start_probe()
    with tempfile.TemporaryDirectory() as out:
        if streamed:
            export_model(lambda weights: lora(weights, directory), directory, checkpoint, str(TOKENIZER_DIR), out,
                         ModelsConfig(save_dtype="float32"), max_shard_bytes=EXPORT_SHARD_MIB * MIB)
        else:
            model = lora(True, directory)
            load_trainable(model, checkpoint)
            save_model(model, str(TOKENIZER_DIR), out, "float32")
    return {"export_peak_mib": peak_mib()}


PROBES = {"whole": probe_whole, "sharded": probe_sharded,
          "export_streamed": lambda d, c: probe_export(d, c, True),
          "export_whole": lambda d, c: probe_export(d, c, False)}


def run_probe(name: str, directory: str, checkpoint: str) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # see the module docstring
    out = subprocess.run([sys.executable, __file__, "--probe", name, directory, checkpoint], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--out", default="bench/results/sharded_memory.json")
    parser.add_argument("--probe", nargs=3, metavar=("NAME", "DIR", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        name, directory, checkpoint = args.probe
        print(json.dumps(PROBES[name](directory, checkpoint)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = os.path.join(tmp, "model")
        fp32_bytes = build_model(directory, args.layers, args.hidden)
        whole = run_probe("whole", directory, os.path.join(tmp, "ckpt1"))
        sharded = run_probe("sharded", directory, os.path.join(tmp, "ckpt2"))
        export = {mode: run_probe(f"export_{mode}", directory, os.path.join(tmp, "ckpt2"))["export_peak_mib"]
                  for mode in ("streamed", "whole")}
    fp32_mib = fp32_bytes / MIB
    worst = {k: max(r[k] for r in sharded["ranks"]) for k in sharded["ranks"][0]}
    result = {
        "params": fp32_bytes // 4, "fp32_mib": fp32_mib, "whole_1_rank": whole, "sharded_2_ranks": sharded,
        "load_ratio_2_vs_1": worst["load_peak_mib"] / whole["load_peak_mib"],
        "train_ratio_2_vs_1": worst["train_peak_mib"] / whole["train_peak_mib"],
        "checkpoint_bytes_per_rank_vs_full": worst["checkpoint_bytes"] / fp32_bytes,
        # weights + AdamW's two moments, fp32: what a checkpoint of the trainable state must hold
        "checkpoint_bytes_all_ranks_vs_trainable_state": sum(r["checkpoint_bytes"] for r in sharded["ranks"])
        / (12 * whole["trainable_params"]),
        "export_shard_mib": EXPORT_SHARD_MIB, "export_peak_mib": export,
        "export_streamed_vs_fp32": export["streamed"] / fp32_mib, "export_whole_vs_fp32": export["whole"] / fp32_mib,
    }
    print(f"model: {fp32_bytes // 4 / 1e6:.0f}M parameters, {fp32_mib:.0f} MiB in fp32")
    print(f"load peak per rank: 1 rank {whole['load_peak_mib']:.0f} MiB, 2 ranks {worst['load_peak_mib']:.0f} MiB "
          f"({result['load_ratio_2_vs_1']:.2f}x)")
    print(f"train peak per rank: 1 rank {whole['train_peak_mib']:.0f} MiB, 2 ranks {worst['train_peak_mib']:.0f} MiB "
          f"({result['train_ratio_2_vs_1']:.2f}x)")
    print(f"checkpoint bytes per rank: {worst['checkpoint_bytes'] / MIB:.1f} MiB = "
          f"{result['checkpoint_bytes_per_rank_vs_full']:.4f} of the full fp32 state dict; all ranks "
          f"{result['checkpoint_bytes_all_ranks_vs_trainable_state']:.3f}x the trainable state (weights + 2 moments)")
    print(f"export peak: streamed {export['streamed']:.0f} MiB = {result['export_streamed_vs_fp32']:.2f}x the fp32 "
          f"model ({EXPORT_SHARD_MIB} MiB shards); whole {export['whole']:.0f} MiB = "
          f"{result['export_whole_vs_fp32']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, result)


if __name__ == "__main__":
    main()
