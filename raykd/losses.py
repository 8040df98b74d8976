"""The knowledge-distillation loss, as pure functions.

    soft = KL( softmax(t/T) || softmax(s/T) ) * T**2    # mean over valid tokens (or examples)
    hard = cross_entropy(s, y)
    loss = alpha * soft + (1 - alpha) * hard

From the cache the teacher is known only on its top-k tokens plus the full log-sum-exp ``lse`` of
its logits at T=1. The rest of the mass, ``1 - sum(softmax(t)[topk])``, is exact at T=1; we spread
it uniformly over the other ``V - k`` tokens (each gets the logit ``log(tail_mass / (V - k)) + lse``)
and apply T to that reconstructed logit vector. At T=1 the tail *mass* is exact; at T!=1 the error
comes only from the tail's shape (measured in bench/distill_cache.py). With k = V it is exact.

Nothing here builds a full-vocabulary teacher tensor: student log-probabilities are computed a
chunk of tokens at a time, and the tail enters through ``sum(log q)`` over the vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def tail_logit(top_values: torch.Tensor, lse: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Logit each of the ``V - k`` unseen tokens gets so their total mass matches the teacher's.

    Args: top_values ``(n, k)`` teacher logits at T=1; lse ``(n,)`` log-sum-exp over the full vocab.
    Returns ``(n,)``; ``-inf`` when k = V (no tail).
    """
    k = top_values.shape[-1]
    if k >= vocab_size:
        return torch.full_like(lse, float("-inf"))
    top_mass = torch.logsumexp(top_values.float(), dim=-1) - lse  # log of the top-k share (<= 0)
    log_tail_mass = torch.log1p(-top_mass.exp().clamp(max=1 - 1e-6))
    return log_tail_mass - math.log(vocab_size - k) + lse


def kd_topk(student_logits: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
            lse: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-token ``KL(p_T || q_T) * T**2`` from a top-k teacher.

    Args:
        student_logits: ``(n, V)`` student logits over the real vocabulary.
        values: ``(n, k)`` teacher logits (T=1) at ``indices`` ``(n, k)``.
        lse: ``(n,)`` teacher log-sum-exp over the full vocabulary at T=1.
    Returns ``(n,)``.
    """
    n, vocab = student_logits.shape
    k = values.shape[-1]
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (n, V)
    tail = tail_logit(values, lse, vocab) / temperature  # (n,), -inf without a tail
    top = values.float() / temperature  # (n, k)
    tail_total = tail + math.log(max(vocab - k, 1))  # log of the tail's summed exp(logit / T)
    log_z = torch.logsumexp(torch.cat([top, tail_total[:, None]], dim=-1), dim=-1)  # (n,)
    log_p_top, log_p_tail = top - log_z[:, None], tail - log_z  # (n, k), (n,)
    log_q_top = log_q.gather(-1, indices.long())  # (n, k)
    kl = (log_p_top.exp() * (log_p_top - log_q_top)).sum(-1)
    if k < vocab:
        sum_log_q_tail = log_q.sum(-1) - log_q_top.sum(-1)  # (n,)
        p_each = log_p_tail.exp()
        kl = kl + p_each * ((vocab - k) * log_p_tail - sum_log_q_tail)
    return kl * temperature**2


def kd_full(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-token ``KL(softmax(t/T) || softmax(s/T)) * T**2`` with the full teacher: ``(n, V)`` → ``(n,)``."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1) * temperature**2


def distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher: dict[str, torch.Tensor],
                      alpha: float, temperature: float, chunk_tokens: int = 1024) -> dict[str, torch.Tensor]:
    """``alpha * soft + (1 - alpha) * hard`` over valid positions, in chunks of tokens.

    Args:
        student_logits: ``(n, V)`` at the valid positions' flattened rows (already shifted for a
            causal LM: row i predicts ``labels[i]``); V is the real vocabulary.
        labels: ``(n,)`` hard targets; ``-100`` rows are skipped.
        teacher: either ``{"logits": (n, V)}`` (online) or ``{"values", "indices": (n, k), "lse": (n,)}``.
    Returns ``{"loss", "soft", "hard", "tokens"}`` (means over valid rows).
    """
    valid = labels != IGNORE_INDEX
    soft = student_logits.new_zeros((), dtype=torch.float32)
    hard = student_logits.new_zeros((), dtype=torch.float32)
    for start in range(0, student_logits.shape[0], chunk_tokens):
        sl = slice(start, start + chunk_tokens)
        if alpha > 0:
            if "logits" in teacher:
                per_token = kd_full(student_logits[sl], teacher["logits"][sl], temperature)
            else:
                per_token = kd_topk(student_logits[sl], **{k: v[sl] for k, v in teacher.items()},
                                    temperature=temperature)
            soft = soft + torch.where(valid[sl], per_token, 0.0).sum()
        if alpha < 1:
            hard = hard + F.cross_entropy(student_logits[sl].float(), labels[sl], ignore_index=IGNORE_INDEX,
                                          reduction="sum")
    count = valid.sum().clamp(min=1)
    soft, hard = soft / count, hard / count
    return {"loss": alpha * soft + (1 - alpha) * hard, "soft": soft.detach(), "hard": hard.detach(),
            "tokens": valid.sum()}
