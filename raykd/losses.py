"""The knowledge-distillation loss, as pure functions, and the teacher summary the cache stores.

    soft = D( softmax(t/T), softmax(s/T) ) * T**2    # mean over valid tokens (or examples)
    hard = cross_entropy(s, y)
    loss = alpha * soft + (1 - alpha) * hard

``D`` is ``distill.loss`` (``LOSSES``), with p the teacher and q the student: ``forward_kl`` KL(p || q)
(the default), ``reverse_kl`` KL(q || p), or ``jsd``

    JSD_b(p, q) = ( b * KL(p || M) + (1 - b) * KL(q || M) ) / ( b * (1 - b) ),   M = b * p + (1 - b) * q

with ``b = distill.jsd_beta`` in (0, 1). The ``b * (1 - b)`` scaling makes forward KL its limit as
b -> 0 and reverse KL its limit as b -> 1 (and keeps its size comparable to theirs, so alpha means
the same across b); unscaled, as TRL writes it, it would vanish at both ends. ``tvd`` is the total
variation ``½ sum_x |p(x) - q(x)|``: one minus it is the rate at which speculative sampling accepts
the student's drafted tokens (DistillSpec, Zhou et al. 2024, distils drafts with it).

**What the cache keeps per position** (``summarize_teacher``), all from the teacher's log-probabilities
``lp = t - logsumexp(t)`` at T=1 (the quantity vLLM's ``prompt_logprobs`` returns; they survive fp16,
raw logits of a large model do not):

- the top-k log-probs and their token ids;
- ``m`` tail samples: token ids drawn from the teacher's *tempered tail* (the ``V - k`` other tokens),
  ``m / 4`` at each temperature of ``TAIL_TEMPERATURES`` = (1, 2, 4, 8), and their log-probs;
- ``tail_lse``: the tail's exact log-partition ``log sum_tail exp(lp / T_g)`` at each of those temperatures.

**Why the tail needs that.** Tempering flattens the teacher: tail mass that is negligible beyond the
top-k at T=1 can hold most of the mass at T > 1, spread in a shape the top-k cannot tell. Neither a
uniform spread of the tail mass nor dropping the tail gives the tempered KL; the error of each against
full logits is in ``bench/topk_temperature.py`` (docs/benchmarks.md).

**The estimator** (``kd_topk``). Write ``g(x) = x + exp(-x) - 1 >= 0`` and, at temperature T,
``p`` the tempered teacher and ``q`` the tempered student. Group the vocabulary into the k top tokens
and one tail bucket; by the chain rule of KL, exactly

    KL(p || q) = KL(p_coarse || q_coarse) + p_tail * KL(p_tail_shape || q_tail_shape)

where ``*_coarse`` are the k + 1 masses (top-k tokens and the tail bucket) and ``*_tail_shape`` the
distributions inside the tail (``p_i / p_tail``, ``q_i / q_tail``). The coarse term is exact: the
teacher's tail mass comes from ``tail_lse`` (exact at the four temperatures, importance-sampled
between them) and the student's is its own mass off the teacher's top-k. The tail-shape KL is
estimated by importance sampling from the cached samples, in g's form ``sum_j w_j g(log p~_j - log q~_j)``:
the proposal is the mixture of the tempered tails at ``TAIL_TEMPERATURES`` (its density at every
sample is known from ``lp`` and ``tail_lse``) and the weights ``w_j`` are self-normalised. Every term is
>= 0 (the loss is a divergence, never below the top-k + bucket KL), each sample contributes a
second-order term in the log-ratio, which keeps the variance low (``bench/topk_temperature.py``),
and the student's tail mass enters exactly rather than through the samples (an importance-sampled
student tail mass under-estimates it for sharp teachers and can put the loss below the bucket bound;
``tests/raykd/test_losses.py`` checks that bound). With k = V the loss is the exact KL.

Every divergence is built from that KL (``kl_view``): reverse KL and JSD take the same chain rule with
the roles (or the mixture M) swapped, their tail-shape terms importance-sampled from the same cached
samples with self-normalised weights ``q / proposal`` (or ``p / proposal``); M is known exactly on the
top-k, the bucket and at every sample, since both p and q are. Total variation takes the same views
(``tv_view``): exact on the top-k, its tail term importance-sampled and bounded by the two tail masses.

Nothing here builds a full-vocabulary teacher tensor: student log-probabilities are computed a
chunk of tokens at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from raykd.config import LOSSES

IGNORE_INDEX = -100
TAIL_TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
TEACHER_KEYS = ("values", "indices", "tail_values", "tail_indices", "tail_lse")


def samples_per_temperature(samples: int) -> list[int]:
    """How ``samples`` tail draws split over ``TAIL_TEMPERATURES`` (as evenly as possible)."""
    n = len(TAIL_TEMPERATURES)
    return [samples // n + (g < samples % n) for g in range(n)]


def summarize_teacher(logits: torch.Tensor, k: int, samples: int, generator: torch.Generator | None = None
                      ) -> dict[str, torch.Tensor]:
    """What the cache stores of a teacher: ``logits`` ``(n, V)`` fp32 → ``values``/``indices`` ``(n, k)``
    (top-k log-probs), ``tail_values``/``tail_indices`` ``(n, m)`` (sampled tail tokens' log-probs) and
    ``tail_lse`` ``(n, G)``. With k >= V the tail is empty: its columns are one ignored sample, -inf."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    values, indices = log_probs.topk(min(k, log_probs.shape[-1]), dim=-1)
    n, vocab = log_probs.shape
    if values.shape[-1] >= vocab:
        empty = torch.full((n, 1), float("-inf"))
        return {"values": values, "indices": indices, "tail_values": empty, "tail_indices": empty.long().clamp(0),
                "tail_lse": empty.expand(n, len(TAIL_TEMPERATURES)).clone()}
    tail = log_probs.scatter(-1, indices, float("-inf"))  # (n, V): the tail's log-probs, top-k masked
    draws, lse = [], []
    for temperature, count in zip(TAIL_TEMPERATURES, samples_per_temperature(samples)):
        tempered = tail / temperature
        lse.append(torch.logsumexp(tempered, dim=-1))
        if count:
            draws.append(torch.multinomial(F.softmax(tempered, dim=-1), count, replacement=True, generator=generator))
    tail_indices = torch.cat(draws, dim=-1)
    return {"values": values, "indices": indices, "tail_values": log_probs.gather(-1, tail_indices),
            "tail_indices": tail_indices, "tail_lse": torch.stack(lse, dim=-1)}


def _bregman(log_mass: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``mass * g(log p - log q)`` with ``g(x) = x + exp(-x) - 1``, computed without overflow."""
    return log_mass.exp() * (log_p - log_q) + (log_mass + log_q - log_p).exp() - log_mass.exp()


@dataclass
class View:
    """One distribution as the loss sees it, all normalised log-probs ``(n, ...)``: on the teacher's
    top-k tokens ``top`` ``(n, k)``, the rest as one bucket ``tail`` ``(n,)``, and at the cached tail
    samples ``samples`` ``(n, m)``. ``tail`` None: ``top`` covers the vocabulary; ``samples`` None: the
    tail is one bucket (a top-k-only cache)."""

    top: torch.Tensor
    tail: torch.Tensor | None = None
    samples: torch.Tensor | None = None


def mixture(p: View, q: View, beta: float) -> View:
    """The view of ``beta * p + (1 - beta) * q`` (``0 < beta < 1``)."""
    def mix(a, b):
        return None if a is None else torch.logaddexp(a + math.log(beta), b + math.log(1 - beta))

    return View(mix(p.top, q.top), mix(p.tail, q.tail), mix(p.samples, q.samples))


def kl_view(a: View, b: View, log_proposal: torch.Tensor | None = None) -> torch.Tensor:
    """``(n,)`` KL(a || b) by the chain rule over the top-k tokens and the tail bucket (exact) plus the
    tail bucket's mass times the KL of the distributions inside it, importance-sampled at the tail
    samples with self-normalised weights ``a / proposal`` (``log_proposal`` ``(n, m)``: the samples'
    log-density under the distribution they were drawn from)."""
    kl = _bregman(a.top, a.top, b.top).sum(-1)
    if a.tail is None:
        return kl
    kl = kl + _bregman(a.tail, a.tail, b.tail)
    if a.samples is None:
        return kl
    weights = F.log_softmax(a.samples - log_proposal, dim=-1)
    shape = _bregman(weights, a.samples - a.tail[:, None], b.samples - b.tail[:, None]).sum(-1)
    return kl + a.tail.exp() * shape


def tv_view(p: View, q: View, log_proposal: torch.Tensor | None = None) -> torch.Tensor:
    """``(n,)`` total variation ``½ sum_x |p(x) - q(x)|``: exact on the top-k tokens; in the tail,
    ``p_tail * E_{x ~ p_tail_shape} |1 - q(x) / p(x)|`` importance-sampled at the tail samples with
    self-normalised weights ``p / proposal``, kept within what the two tail masses allow
    (``[|p_tail - q_tail|, p_tail + q_tail]``); a bucket-only tail gives the lower end (the coarse TV)."""
    tv = (p.top.exp() - q.top.exp()).abs().sum(-1)
    if p.tail is None:
        return 0.5 * tv
    p_tail, q_tail = p.tail.exp(), q.tail.exp()
    low = (p_tail - q_tail).abs()
    if p.samples is None:
        return 0.5 * (tv + low)
    log_weights = F.log_softmax(p.samples - log_proposal, dim=-1)  # w |1 - q/p| as |w - w q/p|: no 0 * inf
    shape = (log_weights.exp() - (log_weights + q.samples - p.samples).exp()).abs().sum(-1)
    return 0.5 * (tv + torch.minimum(torch.maximum(p_tail * shape, low), p_tail + q_tail))


def divergence(p: View, q: View, loss: str = "forward_kl", jsd_beta: float = 0.5,
               log_proposal: torch.Tensor | None = None) -> torch.Tensor:
    """``(n,)`` the divergence ``loss`` between teacher ``p`` and student ``q`` (see ``LOSSES``)."""
    if loss == "forward_kl":
        return kl_view(p, q, log_proposal)
    if loss == "reverse_kl":
        return kl_view(q, p, log_proposal)
    if loss == "jsd":
        m = mixture(p, q, jsd_beta)
        joint = jsd_beta * kl_view(p, m, log_proposal) + (1 - jsd_beta) * kl_view(q, m, log_proposal)
        return joint / (jsd_beta * (1 - jsd_beta))
    if loss == "tvd":
        return tv_view(p, q, log_proposal)
    raise ValueError(f"unknown distillation loss {loss!r}: one of {LOSSES}")


def _proposal_log_density(tail_values: torch.Tensor, tail_lse: torch.Tensor) -> torch.Tensor:
    """``(n, m)`` log-density of each tail sample under the mixture of tempered tails it was drawn from."""
    counts = samples_per_temperature(tail_values.shape[-1])
    lp = tail_values.float()
    mixture_terms = torch.stack([math.log(c / lp.shape[-1]) + lp / t - tail_lse[:, g:g + 1].float()
                                 for g, (t, c) in enumerate(zip(TAIL_TEMPERATURES, counts)) if c], dim=0)
    return torch.logsumexp(mixture_terms, dim=0)


def kd_topk(student_logits: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
            tail_values: torch.Tensor | None = None, tail_indices: torch.Tensor | None = None,
            tail_lse: torch.Tensor | None = None, temperature: float = 1.0, loss: str = "forward_kl",
            jsd_beta: float = 0.5) -> torch.Tensor:
    """Per-token ``D(p_T, q_T) * T**2`` from the cached teacher summary (see the module docstring);
    D is ``loss`` (forward KL by default).

    Args:
        student_logits: ``(n, V)`` student logits over the real vocabulary.
        values, indices: ``(n, k)`` teacher top-k log-probs (T=1) and token ids.
        tail_values, tail_indices: ``(n, m)`` sampled tail tokens' log-probs and ids.
        tail_lse: ``(n, G)`` ``log sum_tail exp(lp / T_g)`` at ``TAIL_TEMPERATURES``.
        Without the tail columns (a top-k-only cache) the tail is one bucket (``bucket_log_mass``).
    Returns ``(n,)``.
    """
    vocab, k = student_logits.shape[-1], values.shape[-1]
    beta = 1.0 / temperature
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (n, V)
    top = values.float() * beta  # (n, k) unnormalised tempered log-probs
    log_q_top = log_q.gather(-1, indices.long())
    if k >= vocab:
        p, q, log_proposal = View(top - torch.logsumexp(top, dim=-1, keepdim=True)), View(log_q_top), None
    elif tail_values is None:
        (p, q), log_proposal = _coarse_views(log_q, log_q_top, top, bucket_log_mass(values, beta), indices), None
    else:
        log_proposal = _proposal_log_density(tail_values, tail_lse)  # (n, m)
        grid = [g for g, t in enumerate(TAIL_TEMPERATURES) if math.isclose(t, temperature)]
        log_w = tail_values.float() * beta - log_proposal
        log_tail = tail_lse[:, grid[0]].float() if grid else torch.logsumexp(log_w, -1) - math.log(log_w.shape[-1])
        p, q = _coarse_views(log_q, log_q_top, top, log_tail, indices)
        p.samples = tail_values.float() * beta - torch.logsumexp(torch.cat([top, log_tail[:, None]], -1), -1)[:, None]
        q.samples = log_q.gather(-1, tail_indices.long())
    return divergence(p, q, loss, jsd_beta, log_proposal) * temperature**2


def _coarse_views(log_q: torch.Tensor, log_q_top: torch.Tensor, top: torch.Tensor, log_tail: torch.Tensor,
                  indices: torch.Tensor) -> tuple[View, View]:
    """The teacher's and the student's views on the k + 1 masses (top-k tokens, tail bucket).

    Args:
        log_q: ``(n, V)`` tempered student log-probs; ``log_q_top`` ``(n, k)`` at the teacher's top-k.
        top: ``(n, k)`` the teacher's unnormalised tempered top-k log-probs; ``log_tail`` ``(n,)`` its
            tail's unnormalised tempered log-mass; ``indices`` ``(n, k)`` the top-k token ids.
    """
    log_z = torch.logsumexp(torch.cat([top, log_tail[:, None]], dim=-1), dim=-1, keepdim=True)  # (n, 1)
    return (View(top - log_z, log_tail - log_z[:, 0]),
            View(log_q_top, _student_log_tail(log_q, log_q_top, indices)))


def _student_log_tail(log_q: torch.Tensor, log_q_top: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``(n,)`` log of the student's mass off the teacher's top-k, exact even when it is tiny.

    The value sums the tail tokens themselves (``1 - sum top`` cancels in fp32 below ~1e-6), without
    autograd, so no second ``(n, V)`` tensor is kept for backward; the gradient comes from the exact
    identity ``d q_tail = -d sum_top q`` through the ``(n, k)`` top-k log-probs alone.
    """
    with torch.no_grad():
        exact = log_q.scatter(-1, indices.long(), float("-inf")).logsumexp(-1)
    top_mass = log_q_top.exp().sum(-1)
    return exact - (top_mass - top_mass.detach()) * torch.exp(-exact)


def bucket_log_mass(values: torch.Tensor, beta: float) -> torch.Tensor:
    """``(n,)`` log of the tail's unnormalised tempered mass ``sum_tail p_i**beta`` known only from the
    top-k log-probs ``values`` ``(n, k)``: the tail's mass ``r = 1 - sum exp(values)`` is exact, and its
    tokens are taken to sit at the last kept level ``p_k`` (``r / p_k`` tokens of ``p_k`` each), so
    ``r * p_k**(beta - 1)``. Exact at T=1; for T > 1 the smallest tail mass the top-k allows. With it,
    the loss of a top-k-only cache (vLLM's ``prompt_logprobs``) is the divergence of the k + 1 masses:
    at T=1 the exact divergence of the coarse-grained distributions, a lower bound of the full one."""
    lp = values.float()
    return _log_rest(lp) + (beta - 1.0) * lp.min(dim=-1).values


def _log_rest(log_probs: torch.Tensor) -> torch.Tensor:
    """``(n,)`` ``log(1 - sum exp(log_probs))``: the log-mass outside ``(n, k)`` log-probs."""
    return torch.log((-torch.expm1(torch.logsumexp(log_probs, dim=-1))).clamp(min=1e-12))


def kd_full(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            loss: str = "forward_kl", jsd_beta: float = 0.5) -> torch.Tensor:
    """Per-token ``D(softmax(t/T), softmax(s/T)) * T**2`` with the full teacher: ``(n, V)`` → ``(n,)``."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return divergence(View(log_p), View(log_q), loss, jsd_beta) * temperature**2


def distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher: dict[str, torch.Tensor],
                      alpha: float, temperature: float, chunk_tokens: int = 1024, loss: str = "forward_kl",
                      jsd_beta: float = 0.5) -> dict[str, torch.Tensor]:
    """``alpha * soft + (1 - alpha) * hard`` over valid positions, in chunks of tokens; ``soft`` is the
    divergence ``loss`` (``LOSSES``; ``jsd_beta`` weighs the teacher in the JSD's mixture) times T².

    Args:
        student_logits: ``(n, V)`` at the valid positions' flattened rows (already shifted for a
            causal LM: row i predicts ``labels[i]``); V is the real vocabulary.
        labels: ``(n,)`` hard targets; ``-100`` rows are skipped.
        teacher: either ``{"logits": (n, V)}`` (online) or the cached summary (``TEACHER_KEYS``, see
            ``kd_topk``).
    Returns ``{"loss", "soft", "hard", "tokens"}`` (means over valid rows).
    """
    valid = labels != IGNORE_INDEX
    soft = student_logits.new_zeros((), dtype=torch.float32)
    hard = student_logits.new_zeros((), dtype=torch.float32)
    for start in range(0, student_logits.shape[0], chunk_tokens):
        sl = slice(start, start + chunk_tokens)
        chunk_soft, chunk_hard = _chunk_sums(student_logits[sl], labels[sl], {k: v[sl] for k, v in teacher.items()},
                                             alpha, temperature, loss, jsd_beta)
        soft, hard = soft + chunk_soft, hard + chunk_hard
    return _means(soft, hard, valid, alpha)


def _chunk_sums(student_logits: torch.Tensor, labels: torch.Tensor, teacher: dict[str, torch.Tensor], alpha: float,
                temperature: float, loss: str, jsd_beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed soft and hard losses of one chunk of rows (``(c, V)`` logits, ``(c,)`` labels)."""
    valid = labels != IGNORE_INDEX
    soft = student_logits.new_zeros((), dtype=torch.float32)
    hard = student_logits.new_zeros((), dtype=torch.float32)
    if alpha > 0:
        if "logits" in teacher:
            per_token = kd_full(student_logits, teacher["logits"], temperature, loss, jsd_beta)
        else:
            per_token = kd_topk(student_logits, **teacher, temperature=temperature, loss=loss, jsd_beta=jsd_beta)
        soft = torch.where(valid, per_token, 0.0).sum()
    if alpha < 1:
        hard = F.cross_entropy(student_logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return soft, hard


def _means(soft: torch.Tensor, hard: torch.Tensor, valid: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    count = valid.sum().clamp(min=1)
    soft, hard = soft / count, hard / count
    return {"loss": alpha * soft + (1 - alpha) * hard, "soft": soft.detach(), "hard": hard.detach(),
            "tokens": valid.sum()}


def _head_chunk_sums(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                     teacher: dict[str, torch.Tensor], alpha: float, temperature: float, loss: str, jsd_beta: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    return _chunk_sums(F.linear(hidden, weight, bias), labels, teacher, alpha, temperature, loss, jsd_beta)


def fused_distillation_loss(hidden: torch.Tensor, head_weight: torch.Tensor, labels: torch.Tensor,
                            teacher: dict[str, torch.Tensor], alpha: float, temperature: float,
                            chunk_tokens: int = 1024, head_bias: torch.Tensor | None = None, loss: str = "forward_kl",
                            jsd_beta: float = 0.5) -> dict[str, torch.Tensor]:
    """``distillation_loss`` with the student's LM head fused in: the head and the loss run a chunk of
    target rows at a time and each chunk is recomputed in backward (activation checkpointing), so the
    full-vocabulary logits, their log-softmax and the loss temporaries of the batch are never held;
    rows without a target never reach the head. Same values and gradients as the unfused loss.

    Args:
        hidden: ``(n, H)`` the student's final hidden states at the flattened, shifted rows.
        head_weight: ``(V, H)`` the LM head's rows of the real vocabulary (``head_bias`` ``(V,)``).
        labels, teacher, alpha, temperature, loss, jsd_beta: as ``distillation_loss``.
    """
    valid = labels != IGNORE_INDEX
    rows = valid.nonzero().squeeze(-1)
    hidden, labels = hidden[rows], labels[rows]
    teacher = {k: v[rows] for k, v in teacher.items()}
    soft = hidden.new_zeros((), dtype=torch.float32)
    hard = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        sl = slice(start, start + chunk_tokens)
        chunk_soft, chunk_hard = torch.utils.checkpoint.checkpoint(
            _head_chunk_sums, hidden[sl], head_weight, head_bias, labels[sl], {k: v[sl] for k, v in teacher.items()},
            alpha, temperature, loss, jsd_beta, use_reentrant=False)
        soft, hard = soft + chunk_soft, hard + chunk_hard
    return _means(soft, hard, valid, alpha)
