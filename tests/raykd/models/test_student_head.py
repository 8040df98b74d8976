"""The fused loss inside a real student: the LM head's input taken from the model's own forward, the
fused loss equal to the plain one in value and gradients (one process, DDP-free; and FSDP2 over two
processes), and models whose logits are not a plain head of their hidden states left unfused."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import Gemma2Config, Gemma2ForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from raykd.config import load_config
from raykd.losses import summarize_teacher
from raykd.models.student_head import fuses_exactly, head_inputs, output_head
from raykd.training.distill import make_loss_fn
from tests.conftest import DEMO, free_port

VOCAB, TINY = 96, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       max_position_embeddings=64)


def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, **TINY))


def gpt2():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0,
                        eos_token_id=0)
    return GPT2LMHeadModel(config).train()  # dropout on: the check compares in eval mode


def batch(rows=4, width=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (rows, width), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 9:] = 0
    labels = ids.clone()
    labels[:, :3], labels[mask == 0] = -100, -100
    summary = summarize_teacher(torch.randn(rows * width, VOCAB, generator=g) * 3, 8, 16,
                                torch.Generator().manual_seed(2))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            **{k: v.reshape(rows, width, -1) for k, v in summary.items()}}


def loss_and_grads(model, data, fused: bool):
    cfg = load_config(DEMO, [f"distill.fused_loss={str(fused).lower()}", "distill.chunk_tokens=5"])
    total, count, _ = make_loss_fn(cfg.distill, cfg.task, VOCAB, None)(model, data)
    model.zero_grad()
    (total / count).backward()
    return total.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("build", [llama, gpt2])
def test_the_fused_loss_in_a_real_student_equals_the_plain_one(build):
    model, data = build(), batch()
    head = output_head(model)
    assert head is not None and fuses_exactly(model, head, data, VOCAB)
    assert head_inputs(model, head, data["input_ids"], data["attention_mask"]).shape == (4, 12, 32)
    model.eval()  # the same maths, without dropout's random masks
    plain, plain_grads = loss_and_grads(model, data, fused=False)
    fused, fused_grads = loss_and_grads(model, data, fused=True)
    assert fused == pytest.approx(plain, rel=1e-5) and plain_grads.keys() == fused_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.allclose(fused_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_soft_capped_logits_are_not_fused():
    torch.manual_seed(0)
    gemma = Gemma2ForCausalLM(Gemma2Config(vocab_size=VOCAB, head_dim=8, final_logit_softcapping=5.0, **TINY))
    assert not fuses_exactly(gemma, output_head(gemma), batch(), VOCAB)


def _fsdp_worker(rank: int, port: int, out: str) -> None:
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    results = {}
    for fused in (False, True):
        model = llama()
        for block in model.model.layers:
            fully_shard(block)
        fully_shard(model)
        loss, grads = loss_and_grads(model, batch(seed=10 + rank), fused)
        results[fused] = (loss, {n: g.full_tensor() for n, g in grads.items()})
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_the_fused_loss_under_fsdp2_gives_the_plain_gradients(tmp_path):
    out = str(tmp_path / "grads.pt")
    mp.spawn(_fsdp_worker, args=(free_port(), out), nprocs=2)
    results = torch.load(out, weights_only=True)  # plain tensors, floats and dicts
    (plain, plain_grads), (fused, fused_grads) = results[False], results[True]
    assert fused == pytest.approx(plain, rel=1e-5) and plain_grads.keys() == fused_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.allclose(fused_grads[name], grad, atol=1e-6, rtol=1e-4), name
