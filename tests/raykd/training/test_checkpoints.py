"""DCP checkpoints: trainable state only, per-rank shards, resharded on load (2 gloo ranks -> 1 process)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from peft import LoraConfig, get_peft_model
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from transformers import LlamaConfig, LlamaForCausalLM

from raykd.models.load import shard_model
from raykd.training.checkpoints import (
    TMP_PREFIX,
    LoopState,
    checkpoint_weight_names,
    load_trainable,
    remove_stale_tmpdirs,
    restore_checkpoint,
    save_checkpoint,
)
from raykd.training.loop import make_optimizer
from raykd.training.session import Session
from tests.conftest import free_port


class Directory:
    """What ``Session.latest`` is: something with ``as_directory()``."""

    def __init__(self, path: Path):
        self.path = path

    def as_directory(self):
        import contextlib

        return contextlib.nullcontext(str(self.path))

    @classmethod
    def from_directory(cls, path: str) -> Directory:
        return cls(Path(path))


def collecting_session(rank: int, world: int, into: Path, latest: Path | None = None) -> Session:
    """A session whose reports copy the checkpoint's files into ``into`` (Ray Train merges ranks' files)."""

    def report(metrics, checkpoint=None):
        if checkpoint is not None:
            shutil.copytree(checkpoint.path, into, dirs_exist_ok=True)

    return Session(rank, world, torch.device("cpu"), report, Directory, Directory(latest) if latest else None)


def lora_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    base = LlamaForCausalLM(config)
    return get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def train_a_step(model, optimizer) -> None:
    ids = torch.arange(16).reshape(2, 8) % 64
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_a_checkpoint_holds_the_trainable_state_only_and_restores_it(tmp_path):
    model = lora_model()
    trainable = trainable_names(model)
    optimizer, _ = make_optimizer([p for p in model.parameters() if p.requires_grad], _train_cfg())
    train_a_step(model, optimizer)
    session = collecting_session(0, 1, tmp_path)
    save_checkpoint(model, optimizer, trainable, LoopState(step=7, losses=[1.0]), {}, session)
    assert checkpoint_weight_names(str(tmp_path)) == trainable  # LoRA A/B only: no frozen base weight
    assert all("lora_" in n for n in trainable)

    fresh = lora_model(seed=1)  # other LoRA init: the checkpoint must overwrite it
    fresh_opt, _ = make_optimizer([p for p in fresh.parameters() if p.requires_grad], _train_cfg())
    state = restore_checkpoint(fresh, fresh_opt, trainable, collecting_session(0, 1, tmp_path / "x", tmp_path))
    assert state.step == state.resumed_from == 7
    restored = dict(fresh.named_parameters())
    assert all(torch.equal(p, restored[n]) for n, p in model.named_parameters() if n in trainable)
    pairs = [(optimizer.state[p], fresh_opt.state[q]) for p, q in zip(model.parameters(), fresh.parameters())
             if p.requires_grad]
    assert pairs and all(torch.equal(a[m], b[m]) for a, b in pairs for m in ("step", "exp_avg", "exp_avg_sq"))

    exported = lora_model(seed=2)
    load_trainable(exported, str(tmp_path))
    trained, loaded = dict(model.named_parameters()), dict(exported.named_parameters())
    assert all(torch.equal(trained[n], loaded[n]) for n in trainable)


def _train_cfg():
    from raykd.config import FinetuneConfig

    return FinetuneConfig(lr=1e-2, steps=10, warmup_steps=0)


def _fsdp_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = lora_model()
        trainable = trainable_names(model)
        model = shard_model(model, "fsdp", torch.device("cpu"), 2)
        optimizer, _ = make_optimizer([p for p in model.parameters() if p.requires_grad], _train_cfg())
        train_a_step(model, optimizer)
        save_checkpoint(model, optimizer, trainable, LoopState(step=3), {}, collecting_session(rank, 2, Path(out)))
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            torch.save({k: v for k, v in full.items() if k in trainable}, os.path.join(out, "..", "full.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_fsdp2_ranks_write_their_own_shards_and_one_process_resumes_them(tmp_path):
    out = tmp_path / "checkpoint"
    mp.spawn(_fsdp_rank, args=(free_port(), str(out)), nprocs=2)
    files = sorted(p.name for p in out.iterdir())
    assert "__0_0.distcp" in files and "__1_0.distcp" in files and ".metadata" in files  # one shard file per rank
    expected = torch.load(tmp_path / "full.pt", weights_only=True)
    model = lora_model(seed=5)
    trainable = trainable_names(model)
    assert checkpoint_weight_names(str(out)) == trainable == set(expected)
    optimizer, _ = make_optimizer([p for p in model.parameters() if p.requires_grad], _train_cfg())
    state = restore_checkpoint(model, optimizer, trainable, collecting_session(0, 1, tmp_path / "x", out))
    assert state.step == 3
    params = dict(model.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in expected.items())  # the two halves, joined
    stored = dcp.FileSystemReader(str(out)).read_metadata().state_dict_metadata
    tensors = [k for k, v in stored.items() if isinstance(v, TensorStorageMetadata) and not k.endswith(".step")]
    assert len(tensors) == 3 * len(trainable)  # each trainable weight and its two Adam moments: nothing frozen


@pytest.mark.slow
def test_a_dead_writers_local_checkpoint_copy_is_deleted_and_a_live_ones_kept(tmp_path):
    """A worker SIGKILLed mid-write leaves its TemporaryDirectory behind (its cleanup never runs)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for pid in (dead.pid, os.getpid()):
        shard = tmp_path / f"{TMP_PREFIX}{pid}-abc123" / "__0_0.distcp"
        shard.parent.mkdir()
        shard.write_bytes(b"x" * 1024)
    other = tmp_path / "tmp-not-ours"
    other.mkdir()
    assert remove_stale_tmpdirs(str(tmp_path)) == [str(tmp_path / f"{TMP_PREFIX}{dead.pid}-abc123")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{TMP_PREFIX}{os.getpid()}-abc123", "tmp-not-ours"])
