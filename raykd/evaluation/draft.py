"""How good a model is as the teacher's speculative draft, measured on held-out tokens.

Speculative sampling (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative
Decoding"; Chen et al. 2023) lets a draft q propose γ tokens that the target p checks in one forward
pass; the output is distributed exactly as p's own. A proposed token is accepted with probability
``sum_x min(p(x), q(x)) = 1 - TV(p, q)`` (α, at temperature 1); at temperature 0 it is accepted when the
two argmaxes agree. With α the mean acceptance and tokens taken as independent, one target pass makes
``(1 - α^(γ+1)) / (1 - α)`` tokens on average, and the wall-time speedup over the target alone is that
over ``γ c + 1``, where ``c`` is the draft's cost per token relative to the target's (their Theorem 3.8).
DistillSpec (Zhou et al., ICLR 2024) distils the draft to raise α.
"""

from __future__ import annotations

import ray
import torch

from raykd.config import from_dict
from raykd.data.tokens import IGNORE_INDEX, load_tokenizer
from raykd.evaluation.bootstrap import weighted_difference_interval, weighted_interval
from raykd.evaluation.scoring import held_out_batches
from raykd.models.load import load_configured
from raykd.models.student import build_student

GAMMAS = tuple(range(1, 9))  # draft lengths the report predicts for
DRAFT_BATCH = 8  # held-out rows per forward pass: each model's (b, L, V) logits are held at once


def acceptance(target_log_probs: torch.Tensor, draft_log_probs: torch.Tensor) -> torch.Tensor:
    """``sum_x min(p(x), q(x))`` per position: ``(..., V)`` log-probs of target and draft → ``(...)``."""
    return torch.minimum(target_log_probs.exp(), draft_log_probs.exp()).sum(-1)


def accepted_length(alpha: float, gamma: int) -> float:
    """Mean tokens one target pass makes with a draft of ``gamma`` tokens accepted at rate ``alpha``
    (the accepted prefix plus the target's own next token): ``(1 - α^(γ+1)) / (1 - α)``, γ + 1 at α = 1."""
    if alpha >= 1:
        return gamma + 1.0
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def predicted_speedup(alpha: float, gamma: int, cost_ratio: float) -> float:
    """Wall-time speedup over the target alone: ``accepted_length / (γ c + 1)``, ``c`` = the draft's cost per
    token over the target's (Leviathan et al., Theorem 3.8)."""
    return accepted_length(alpha, gamma) / (gamma * cost_ratio + 1)


@torch.no_grad()
def label_log_probs(model, batch: dict[str, torch.Tensor], vocab: int) -> torch.Tensor:
    """``(N, vocab)`` log-probs at the ``N`` positions of ``batch`` that predict a label token (teacher-forced
    on ``input_ids``; position t predicts token t + 1), in row order; columns past the tokenizer's
    ``vocab`` (a padded embedding) are cut."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1, :vocab]
    return torch.log_softmax(logits[batch["labels"][:, 1:] != IGNORE_INDEX].float(), -1)


def row_acceptance(target: torch.Tensor, draft: torch.Tensor, labels: torch.Tensor
                   ) -> tuple[list[float], list[float], list[int]]:
    """Per row of ``labels`` ``(b, L)``: mean acceptance α and mean greedy agreement (1 where the argmaxes
    agree) over its label tokens, and their number, from the ``(N, V)`` log-probs of ``label_log_probs``.
    Rows without a label token are left out."""
    rows = (labels[:, 1:] != IGNORE_INDEX).nonzero()[:, 0]  # (N,) the row of each label token
    b = labels.shape[0]
    counts = torch.bincount(rows, minlength=b).float()
    alpha = torch.zeros(b).index_add_(0, rows, acceptance(target, draft))
    agree = torch.zeros(b).index_add_(0, rows, (target.argmax(-1) == draft.argmax(-1)).float())
    kept = counts > 0
    return ((alpha[kept] / counts[kept]).tolist(), (agree[kept] / counts[kept]).tolist(),
            counts[kept].int().tolist())


def token_mean(values: list[float], tokens: list[int]) -> float:
    """The per-token mean from per-row means over ``tokens`` tokens each."""
    return sum(v * n for v, n in zip(values, tokens)) / sum(tokens)


def draft_summary(alphas: list[float], agreements: list[float], tokens: list[int], cost_ratio: float,
                  seed: int = 0) -> dict:
    """A draft's report entry from its per-row α and greedy agreement over ``tokens`` label tokens each:
    per-token means, α's 95% interval (rows resampled), and per γ the predicted accepted length and
    speedup."""
    alpha = token_mean(alphas, tokens)
    return {"acceptance": alpha, "acceptance_ci": weighted_interval(alphas, tokens, seed=seed),
            "greedy_agreement": token_mean(agreements, tokens), "cost_ratio": cost_ratio,
            "accepted_length": {str(g): accepted_length(alpha, g) for g in GAMMAS},
            "predicted_speedup": {str(g): predicted_speedup(alpha, g, cost_ratio) for g in GAMMAS}}


def acceptance_gain(alphas: list[float], control: list[float], tokens: list[int], seed: int = 0) -> dict:
    """Per-token α of a draft minus its control's over the same rows, with the paired 95% interval."""
    return {"difference": token_mean(alphas, tokens) - token_mean(control, tokens),
            "difference_ci": weighted_difference_interval(alphas, control, tokens, seed=seed)}


@ray.remote
def measure_drafts(cfg_dict: dict, dirs: dict[str, str], rows: list[dict], kind: str, cost_ratio: float
                   ) -> dict | None:
    """Draft quality for the teacher of the student, the no-teacher baseline and, as the control, the
    student's undistilled base, teacher-forced on the held-out rows' label tokens (full logits: α is
    exact). ``cost_ratio``: the student's batch-1 latency over the teacher's (the three drafts share an
    architecture). None when no row has a label token."""
    cfg = from_dict(cfg_dict)
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    teacher = load_configured(dirs["teacher"], cfg).eval()
    drafts = {arm: load_configured(dirs[arm], cfg).eval() for arm in ("student", "baseline")}
    drafts["base"] = build_student(cfg, teacher=dirs["teacher"]).eval()
    tokenizer = load_tokenizer(dirs["teacher"], cfg.models.trust_remote_code)
    alphas, agreements, tokens = {name: [] for name in drafts}, {name: [] for name in drafts}, []
    for batch in held_out_batches(rows, tokenizer, cfg.data, cfg.task, kind, DRAFT_BATCH):
        target = label_log_probs(teacher, batch, len(tokenizer))
        for name, model in drafts.items():
            row_alphas, row_agreements, row_tokens = row_acceptance(
                target, label_log_probs(model, batch, len(tokenizer)), batch["labels"])
            alphas[name] += row_alphas
            agreements[name] += row_agreements
        tokens += row_tokens
    if not tokens:
        return None
    return {"tokens": sum(tokens), "rows": len(tokens),
            "drafts": {name: draft_summary(alphas[name], agreements[name], tokens, cost_ratio, cfg.seed)
                       for name in drafts},
            "student_minus_base": acceptance_gain(alphas["student"], alphas["base"], tokens, cfg.seed)}
