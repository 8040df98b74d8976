"""Sharded loading: 2 gloo ranks each read only their rows of the weight files into FSDP2 shards; the
sharded model computes what the whole model loaded by transformers computes, for several families."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from raykd.config import FinetuneConfig
from raykd.models.load import add_lora, fully_shard_model, load_model
from raykd.models.sharded_load import load_sharded, shard_rows
from tests import families
from tests.conftest import free_port

SEED = 7


@pytest.mark.parametrize("rows,world", [(8, 2), (7, 2), (67, 4), (1, 2), (3, 4)])
def test_shard_rows_is_torch_chunk_of_dim_0(rows, world):
    spans = [shard_rows(rows, rank, world) for rank in range(world)]
    sizes = [len(c) for c in torch.arange(rows).chunk(world)] + [0] * world
    assert [stop - start for start, stop in spans] == sizes[:world]
    assert spans[0][0] == 0 and spans[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, in rank order


# (family, task, LoRA?) — a causal-LM base loaded as a classifier gets a fresh head no file holds
CASES = [("llama", "causal_lm", True), ("qwen2", "causal_lm", True), ("gpt2", "causal_lm", True),
         ("bert", "sequence_classification", False), ("llama", "sequence_classification", True)]


def builder(directory: Path, task: str, lora: bool):
    def build(weights: bool) -> torch.nn.Module:
        torch.manual_seed(SEED)
        model = load_model(str(directory), task, 3, weights=weights, pad_token_id=0)
        if lora:
            model = add_lora(model, FinetuneConfig(lora_target_modules=["all-linear"], lora_dropout=0.0), task)
        return model
    return build


def _rank(rank: int, port: int, cases: list[tuple[str, str, bool, str]]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    cpu = torch.device("cpu")
    try:
        for family, task, lora, directory in cases:
            build = builder(Path(directory), task, lora)
            whole = build(True).eval()
            sharded = load_sharded(lambda b=build: b(False), directory,
                                   lambda m: fully_shard_model(m, cpu, 2, False, False), cpu, rank, 2, SEED).eval()
            ids = torch.arange(3, 27).reshape(2, 12) % 300
            with torch.no_grad():
                expected, got = whole(input_ids=ids).logits, sharded(input_ids=ids).logits
            full = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))  # on every rank
            lora_b = [v for k, v in full.items() if "lora_B" in k]
            # peft's init: B = 0
            assert (lora_b or not lora) and all(torch.count_nonzero(b) == 0 for b in lora_b), family
            if task == "sequence_classification" and family != "bert":  # a fresh head: its own init, same on ranks
                head = full["base_model.model.score.modules_to_save.default.weight"]
                assert 0.01 < head.std() < 0.04, (family, head.std())  # initializer_range 0.02
                assert got.shape == expected.shape
                continue
            assert torch.allclose(got, expected, atol=1e-5), (family, task, (got - expected).abs().max())
    finally:
        dist.barrier()
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_load_their_shards_and_compute_what_the_whole_model_computes(tmp_path):
    cases = [(family, task, lora, str(families.build(family, tmp_path))) for family, task, lora in CASES]
    mp.spawn(_rank, args=(free_port(), cases), nprocs=2)
