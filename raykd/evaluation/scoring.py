"""Held-out quality of a model: loss and task score (greedy completions scored by ``evaluate.scorer`` for a causal
LM, accuracy for a classifier). Plain functions on an unsharded model; jobs run them in Ray tasks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import ray
import torch
import torch.nn.functional as F

from raykd.config import DataConfig, from_dict
from raykd.data.datasets import tokenize_batch
from raykd.data.examples import REFERENCED_KINDS, Prompt, generation_case, prompt_ids
from raykd.data.tokens import IGNORE_INDEX, load_tokenizer, stop_token_ids
from raykd.evaluation.scorers import load_scorer, scores
from raykd.models.load import load_configured


def _columns(rows: list[dict]) -> dict[str, list]:
    return {k: [r.get(k) for r in rows] for k in rows[0]} if rows else {}


def held_out_batches(rows: list[dict], tokenizer, data: DataConfig, task: str, kind: str,
                     batch_size: int = 64) -> Iterator[dict[str, torch.Tensor]]:
    """``rows`` tokenised as training tokenises them, ``batch_size`` at a time: ``input_ids``,
    ``attention_mask``, ``labels`` ``(b, L)`` (a classifier's ``labels``: ``(b,)``)."""
    cfg = dataclasses.asdict(data)
    for i in range(0, len(rows), batch_size):
        arrays = tokenize_batch(_columns(rows[i : i + batch_size]), tokenizer.name_or_path, cfg, task, kind)
        yield {k: torch.as_tensor(v) for k, v in arrays.items()}


@torch.no_grad()
def mean_loss(model, batch: dict[str, torch.Tensor], task: str) -> tuple[float, int]:
    """Summed CE and count over valid targets: label tokens (causal LM, shifted) or examples."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    if task == "sequence_classification":
        return F.cross_entropy(logits, batch["labels"], reduction="sum").item(), len(batch["labels"])
    labels = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss.item(), int((labels != IGNORE_INDEX).sum())


@torch.no_grad()
def generate_completions(model, tokenizer, prompts: list[Prompt], max_new_tokens: int, max_len: int,
                         batch_size: int = 64, do_sample: bool = False, temperature: float = 1.0) -> list[str]:
    """Completions of ``prompts`` (texts or conversations, ``raykd.data.examples``; greedy unless
    ``do_sample``; left-padded batches), ending at any of the model's stop tokens
    (``raykd.data.tokens.stop_token_ids``), decoded without special tokens."""
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        encoded = [prompt_ids(tokenizer, p, max_len) for p in prompts[i : i + batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(e)) + e for e in encoded])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        device = next(model.parameters()).device
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if do_sample else {"do_sample": False}
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_token_ids(model, tokenizer),
                             **sampling)
        out += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    return out


def score_model(model, tokenizer, rows: list[dict], data: DataConfig, task: str, kind: str,
                batch_size: int = 64, generate: bool = True, scorer: str = "exact") -> dict[str, float | None]:
    """``{"loss", "score", "hits"}`` of ``model`` on ``rows``. Score: accuracy (classification), the mean
    of ``scorer`` (``raykd.evaluation.scorers``) over greedy completions against the reference (a
    prompt's completion, a conversation's last assistant turn; None unless ``generate``: generation is
    the slow part), None for plain text (loss only); ``hits``: the per-row values behind the score
    (None without one), for confidence intervals."""
    model.eval()
    total, count, hits = 0.0, 0, []
    for batch in held_out_batches(rows, tokenizer, data, task, kind, batch_size):
        loss_sum, n = mean_loss(model, batch, task)
        total, count = total + loss_sum, count + n
        if task == "sequence_classification":
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            hits += (logits.argmax(-1) == batch["labels"]).int().tolist()
    if task == "causal_lm" and kind in REFERENCED_KINDS and generate:
        cases = [generation_case(r, data, kind) for r in rows]
        preds = generate_completions(model, tokenizer, [prompt for prompt, _ in cases],
                                     data.max_new_tokens, data.max_seq_len, batch_size)
        hits = scores(load_scorer(scorer), preds, [reference for _, reference in cases])
    score = sum(hits) / len(rows) if hits else None
    return {"loss": total / max(1, count), "score": score, "hits": hits or None}


@ray.remote
def score_task(cfg_dict: dict, model_spec: str, tokenizer_path: str, rows: list[dict], kind: str) -> dict:
    """Score a model (HF directory or base spec) on held-out rows, in its own Ray worker."""
    cfg = from_dict(cfg_dict)
    torch.manual_seed(cfg.seed)  # a classifier base gets the same fresh head as training starts from
    model = load_configured(model_spec, cfg)
    tokenizer = load_tokenizer(tokenizer_path, cfg.models.trust_remote_code)
    return score_model(model, tokenizer, rows, cfg.data, cfg.task, kind, scorer=cfg.evaluate.scorer)
