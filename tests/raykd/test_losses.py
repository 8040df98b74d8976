"""The KD loss by its properties, without Ray."""

import math

import pytest
import torch
import torch.nn.functional as F

from raykd.losses import TAIL_TEMPERATURES, distillation_loss, kd_full, kd_topk, summarize_teacher

V = 50


def logits(n=12, scale=3.0, seed=0):
    return torch.randn(n, V, generator=torch.Generator().manual_seed(seed)) * scale


def topk(teacher, k, samples=32):
    return summarize_teacher(teacher, k, samples, torch.Generator().manual_seed(0))


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


def test_summary_holds_log_probs_and_the_exact_tempered_tail_partition():
    t = logits(seed=3)
    summary = topk(t, 8)
    log_p = F.log_softmax(t, -1)
    assert torch.allclose(summary["values"], log_p.topk(8, -1).values)
    assert torch.allclose(summary["tail_values"], log_p.gather(-1, summary["tail_indices"]))
    tail = log_p.scatter(-1, summary["indices"], float("-inf"))
    for g, temperature in enumerate(TAIL_TEMPERATURES):
        assert torch.allclose(summary["tail_lse"][:, g], torch.logsumexp(tail / temperature, -1))
    assert not (summary["tail_indices"][..., None] == summary["indices"][:, None, :]).any()  # samples are tail


@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.0, 4.0, 8.0])
def test_sampled_tail_estimates_the_full_kl_when_the_tail_holds_much_of_the_mass(temperature):
    n = 4000  # positions: the estimate is unbiased per token up to self-normalisation, so means converge
    t, s = logits(n=n, seed=4, scale=4.0), logits(n=n, seed=5, scale=4.0)
    s = 0.7 * t + 0.5 * s  # a student that agrees with the teacher only in part
    full = kd_full(s, t, temperature)
    approx = kd_topk(s, **topk(t, 4), temperature=temperature)
    tempered_tail = 1 - F.softmax(t / temperature, -1).topk(4, -1).values.sum(-1)
    if temperature >= 2:
        assert tempered_tail.mean() > 0.3  # the case a uniform or dropped tail gets wrong
    assert approx.mean().item() == pytest.approx(full.mean().item(), rel=0.03)
    assert (approx >= -1e-5).all()  # every term of the estimator is non-negative


def test_sampled_tail_is_never_below_the_top_k_plus_bucket_kl_for_a_sharp_teacher():
    # A teacher with most of its mass on one token and a student far from it: estimating the student's
    # tail mass from the samples (instead of exactly) put the loss below this bound by up to 0.74 nats.
    g = torch.Generator().manual_seed(0)
    n, vocab = 2000, 2000
    t = torch.randn(n, vocab, generator=g) * 2.0
    t[:, 0] += 12.0
    s = torch.randn(n, vocab, generator=g)
    summary = summarize_teacher(t, 8, 32, torch.Generator().manual_seed(1))
    sampled = kd_topk(s, **summary, temperature=1.0)
    bucket = kd_topk(s, summary["values"], summary["indices"], temperature=1.0)
    assert (sampled >= bucket - 1e-5).all()
    assert sampled.mean().item() == pytest.approx(kd_full(s, t, 1.0).mean().item(), rel=0.01)


def test_the_students_tail_mass_has_the_gradient_of_its_exact_sum():
    # The value is summed without autograd (no second (n, V) tensor for backward); its gradient must
    # still be that of log(sum of the student's tail probabilities).
    from raykd import losses

    t = logits(seed=15, scale=4.0)
    summary = topk(t, 8)
    s = logits(seed=16, scale=6.0).requires_grad_()
    grads = []
    for exact in (losses._student_log_tail,
                  lambda log_q, _, idx: log_q.scatter(-1, idx.long(), float("-inf")).logsumexp(-1)):
        original, losses._student_log_tail = losses._student_log_tail, exact
        try:
            grads.append(torch.autograd.grad(kd_topk(s, **summary, temperature=2.0).sum(), s)[0])
        finally:
            losses._student_log_tail = original
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


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


def test_a_top_k_only_cache_gives_the_exact_kl_of_top_k_plus_one_tail_bucket_at_t1():
    from raykd.losses import bucket_log_mass

    t, s = logits(seed=6), logits(seed=7)
    log_p, log_q = F.log_softmax(t, -1), F.log_softmax(s, -1)
    values, indices = log_p.topk(8, -1)
    coarse_p = torch.cat([values.exp(), 1 - values.exp().sum(-1, keepdim=True)], -1)  # k tokens + the tail
    q_top = log_q.gather(-1, indices).exp()
    coarse_q = torch.cat([q_top, 1 - q_top.sum(-1, keepdim=True)], -1)
    expected = (coarse_p * (coarse_p.log() - coarse_q.log())).sum(-1)
    bucket = kd_topk(s, values, indices, temperature=1.0)
    assert torch.allclose(bucket, expected, atol=1e-5)
    assert (bucket <= kd_full(s, t, 1.0) + 1e-6).all()  # coarse-graining never adds divergence
    assert kd_topk(t, values, indices, temperature=1.0).abs().max() < 1e-5  # zero for the teacher itself
    for temperature in (2.0, 4.0):  # the assumed tail: exact mass at T=1, never more tempered mass than the truth
        true = torch.logsumexp(log_p.scatter(-1, indices, float("-inf")) / temperature, -1)
        assert (bucket_log_mass(values, 1 / temperature) <= true + 1e-5).all()
    assert torch.allclose(bucket_log_mass(values, 1.0), torch.logsumexp(log_p.scatter(-1, indices, float("-inf")), -1),
                          atol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("source", ["sampled", "bucket", "online"])
def test_the_fused_head_and_loss_equal_the_unfused_in_value_and_gradients(alpha, source):
    from raykd.losses import fused_distillation_loss

    g = torch.Generator().manual_seed(8)
    n, hidden_size = 40, 16
    hidden = torch.randn(n, hidden_size, generator=g, requires_grad=True)
    weight = torch.randn(V, hidden_size, generator=g, requires_grad=True)
    bias = torch.randn(V, generator=g, requires_grad=True)
    labels = torch.randint(0, V, (n,), generator=g)
    labels[::3] = -100  # prompt and padding rows
    t = logits(n=n, seed=9)
    teacher = {"logits": t} if source == "online" else topk(t, 8)
    if source == "bucket":
        teacher = {k: teacher[k] for k in ("values", "indices")}
    unfused = distillation_loss(F.linear(hidden, weight, bias), labels, teacher, alpha, 2.0, chunk_tokens=7)
    expected = torch.autograd.grad(unfused["loss"], (hidden, weight, bias))
    fused = fused_distillation_loss(hidden, weight, labels, teacher, alpha, 2.0, chunk_tokens=7, head_bias=bias)
    got = torch.autograd.grad(fused["loss"], (hidden, weight, bias))
    assert fused["loss"].item() == pytest.approx(unfused["loss"].item(), rel=1e-5)
    assert fused["tokens"] == unfused["tokens"] and fused["soft"].item() == pytest.approx(unfused["soft"].item(),
                                                                                          rel=1e-5)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


# -- the other divergences (distill.loss) --------------------------------------------------------------

LOSSES = ["forward_kl", "reverse_kl", "jsd", "tvd"]


def full_vocabulary(s, t, temperature, loss, beta=0.5):
    """Each divergence written out over the whole vocabulary, independently of raykd.losses."""
    p, q = F.softmax(t / temperature, -1), F.softmax(s / temperature, -1)

    def kl(a, b):
        return (a * (a.log() - b.log())).sum(-1)

    if loss == "forward_kl":
        d = kl(p, q)
    elif loss == "reverse_kl":
        d = kl(q, p)
    elif loss == "tvd":
        d = 0.5 * (p - q).abs().sum(-1)
    else:
        m = beta * p + (1 - beta) * q
        d = (beta * kl(p, m) + (1 - beta) * kl(q, m)) / (beta * (1 - beta))
    return d * temperature**2


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_every_divergence_is_zero_for_identical_inputs_from_every_teacher_source(loss, temperature):
    t = logits(seed=20)
    summary = topk(t, 6)
    bucket = {k: summary[k] for k in ("values", "indices")}
    for got in (kd_full(t, t, temperature, loss), kd_topk(t, **topk(t, V), temperature=temperature, loss=loss),
                kd_topk(t, **summary, temperature=temperature, loss=loss),
                kd_topk(t, **bucket, temperature=1.0, loss=loss)):
        assert got.abs().max() < 1e-5


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_with_k_equal_vocab_every_divergence_is_the_full_vocabulary_formula(loss, temperature):
    s, t = logits(seed=21), logits(seed=22)
    for beta in (0.1, 0.5, 0.9) if loss == "jsd" else (0.5,):
        expected = full_vocabulary(s, t, temperature, loss, beta)
        assert torch.allclose(kd_full(s, t, temperature, loss, beta), expected, rtol=1e-4, atol=1e-6)
        got = kd_topk(s, **topk(t, V), temperature=temperature, loss=loss, jsd_beta=beta)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("source", ["full", "sampled", "bucket"])
def test_jsd_tends_to_forward_kl_as_beta_goes_to_0_and_to_reverse_kl_as_beta_goes_to_1(source):
    s, t = logits(seed=23, scale=1.5), logits(seed=24, scale=1.5)  # at b, M ~ q where b * p << q: no extreme p/q
    summary = topk(t, 5)
    if source == "bucket":
        summary = {k: summary[k] for k in ("values", "indices")}

    def d(loss, beta=0.5):
        if source == "full":
            return kd_full(s, t, 1.0, loss, beta)
        return kd_topk(s, **summary, temperature=1.0, loss=loss, jsd_beta=beta)

    assert torch.allclose(d("jsd", 1e-4), d("forward_kl"), rtol=1e-2)
    assert torch.allclose(d("jsd", 1 - 1e-4), d("reverse_kl"), rtol=1e-2)
    middle = d("jsd", 0.5)
    assert (middle > 0).all() and not torch.allclose(middle, d("forward_kl"), rtol=0.05)


@pytest.mark.parametrize("loss", ["reverse_kl", "jsd", "tvd"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_sampled_tail_estimates_the_other_divergences_when_the_tail_holds_much_of_the_mass(loss, temperature):
    n = 4000
    t, s = logits(n=n, seed=4, scale=4.0), logits(n=n, seed=5, scale=4.0)
    s = 0.7 * t + 0.5 * s
    approx = kd_topk(s, **topk(t, 4), temperature=temperature, loss=loss)
    assert (approx >= -1e-6).all()  # a sum of non-negative terms: never below zero, even per token
    assert approx.mean().item() == pytest.approx(full_vocabulary(s, t, temperature, loss).mean().item(), rel=0.05)


@pytest.mark.parametrize("loss", ["reverse_kl", "jsd", "tvd"])
@pytest.mark.parametrize("source", ["sampled", "online"])
def test_the_fused_loss_equals_the_unfused_for_every_divergence(loss, source):
    from raykd.losses import fused_distillation_loss

    g = torch.Generator().manual_seed(25)
    hidden = torch.randn(30, 16, generator=g, requires_grad=True)
    weight = torch.randn(V, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, V, (30,), generator=g)
    t = logits(n=30, seed=26)
    teacher = {"logits": t} if source == "online" else topk(t, 8)
    unfused = distillation_loss(F.linear(hidden, weight), labels, teacher, 0.7, 2.0, 7, loss, 0.3)
    fused = fused_distillation_loss(hidden, weight, labels, teacher, 0.7, 2.0, 7, loss=loss, jsd_beta=0.3)
    assert fused["loss"].item() == pytest.approx(unfused["loss"].item(), rel=1e-5)
    for a, b in zip(torch.autograd.grad(fused["loss"], (hidden, weight)),
                    torch.autograd.grad(unfused["loss"], (hidden, weight))):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_total_variation_from_a_cache_stays_within_what_the_tail_masses_allow(temperature):
    """Exact top-k, the tail's term between |p_tail - q_tail| (the top-k-only value) and p_tail + q_tail,
    and one minus it the speculative acceptance rate sum_x min(p, q) of the full distributions."""
    s, t = logits(seed=27, scale=3.0), logits(seed=28, scale=3.0)
    full = kd_full(s, t, temperature, "tvd") / temperature**2
    p, q = F.softmax(t / temperature, -1), F.softmax(s / temperature, -1)
    assert torch.allclose(1 - full, torch.minimum(p, q).sum(-1), atol=1e-5)
    summary = topk(t, 5)
    sampled = kd_topk(s, **summary, temperature=temperature, loss="tvd") / temperature**2
    top = torch.zeros_like(p, dtype=torch.bool).scatter(-1, summary["indices"], True)
    exact_top = 0.5 * torch.where(top, (p - q).abs(), 0).sum(-1)
    p_tail, q_tail = torch.where(top, 0, p).sum(-1), torch.where(top, 0, q).sum(-1)
    assert (sampled >= exact_top + 0.5 * (p_tail - q_tail).abs() - 1e-5).all()
    assert (sampled <= exact_top + 0.5 * (p_tail + q_tail) + 1e-5).all()
    if temperature == 1.0:  # the top-k-only cache is exact on the top-k plus the coarse tail term
        bucket = kd_topk(s, summary["values"], summary["indices"], temperature=1.0, loss="tvd")
        assert torch.allclose(bucket, exact_top + 0.5 * (p_tail - q_tail).abs(), atol=1e-5)
