"""The KD loss by its properties, without Ray."""

import math

import pytest
import torch
import torch.nn.functional as F

from raykd.losses import distillation_loss, kd_full, kd_topk

V = 50


def logits(n=12, scale=3.0, seed=0):
    return torch.randn(n, V, generator=torch.Generator().manual_seed(seed)) * scale


def topk(teacher, k):
    values, indices = teacher.topk(k, dim=-1)
    return {"values": values, "indices": indices, "lse": torch.logsumexp(teacher, dim=-1)}


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_zero_for_identical_logits(temperature):
    t = logits()
    assert kd_full(t, t, temperature).abs().max() < 1e-5
    assert kd_topk(t, **topk(t, V), temperature=temperature).abs().max() < 1e-5


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_topk_with_k_equal_vocab_matches_torch_kl_div(temperature):
    s, t = logits(seed=1), logits(seed=2)
    expected = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                        reduction="batchmean", log_target=True) * temperature**2
    assert kd_full(s, t, temperature).mean() == pytest.approx(expected.item(), rel=1e-5)
    assert kd_topk(s, **topk(t, V), temperature=temperature).mean() == pytest.approx(expected.item(), rel=1e-4)


def test_topk_tail_mass_is_exact_at_t1_and_close_for_peaked_teachers():
    s, t = logits(seed=3), logits(seed=4, scale=6.0)
    full = kd_full(s, t, 1.0)
    approx = kd_topk(s, **topk(t, 20), temperature=1.0)
    assert torch.allclose(approx, full, rtol=0.1, atol=0.05)


def test_t_squared_factor():
    s, t = logits(seed=5), logits(seed=6)
    for temperature in (2.0, 5.0):
        raw = kd_full(s, t, temperature) / temperature**2
        log_p, log_q = F.log_softmax(t / temperature, -1), F.log_softmax(s / temperature, -1)
        assert torch.allclose(raw, (log_p.exp() * (log_p - log_q)).sum(-1), atol=1e-6)


def test_alpha_endpoints_are_pure_ce_and_pure_kd():
    s, t = logits(seed=7), logits(seed=8)
    y = t.argmax(-1)
    hard = distillation_loss(s, y, {"logits": t}, alpha=0.0, temperature=2.0)["loss"]
    assert hard.item() == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-6)
    soft = distillation_loss(s, y, {"logits": t}, alpha=1.0, temperature=2.0)["loss"]
    assert soft.item() == pytest.approx(kd_full(s, t, 2.0).mean().item(), rel=1e-6)
    mixed = distillation_loss(s, y, {"logits": t}, alpha=0.3, temperature=2.0)["loss"]
    assert mixed.item() == pytest.approx(0.3 * soft.item() + 0.7 * hard.item(), rel=1e-5)


def test_masked_rows_do_not_count():
    s, t = logits(seed=9), logits(seed=10)
    y = t.argmax(-1)
    masked = y.clone()
    masked[6:] = -100
    garbage = s.clone()
    garbage[6:] = 1e3 * torch.randn(6, V)  # whatever the student says at masked rows is ignored
    out = distillation_loss(garbage, masked, topk(t, 8), alpha=0.5, temperature=2.0)
    ref = distillation_loss(s[:6], y[:6], {k: v[:6] for k, v in topk(t, 8).items()}, alpha=0.5, temperature=2.0)
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-5)
    assert out["tokens"].item() == 6


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunked_equals_unchunked(chunk):
    s, t = logits(n=40, seed=11), logits(n=40, seed=12)
    y = t.argmax(-1)
    whole = distillation_loss(s, y, topk(t, 10), 0.5, 3.0, chunk_tokens=10_000)["loss"]
    parts = distillation_loss(s, y, topk(t, 10), 0.5, 3.0, chunk_tokens=chunk)["loss"]
    assert parts.item() == pytest.approx(whole.item(), rel=1e-5)


def test_gradient_flows_to_student_only():
    s = logits(seed=13).requires_grad_()
    t = logits(seed=14)
    distillation_loss(s, t.argmax(-1), topk(t, 5), 0.5, 2.0)["loss"].backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and not math.isnan(s.grad.sum().item())
