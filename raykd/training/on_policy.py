"""On-policy batches (``distill.on_policy_fraction``): the student samples completions of a batch's
prompts, the teacher scores those exact tokens, and the soft loss alone is taken on them.

Off-policy distillation (the cache) teaches the student the teacher's distribution on text the
student never wrote; on-policy batches show it the teacher's view of its *own* mistakes, the way
TRL's GKD and "on-policy distillation" train. The teacher runs as a pool of Ray actors (the cache's
own ``TeacherScorer``, each on ``distill.on_policy.cpus_per_teacher`` / ``gpus_per_teacher``) that the
training workers call, so a 70B teacher scores on its own GPUs while the student trains on others;
it is the cache's own scorer on the cache's engine (``cache.engine``: vLLM's ``prompt_logprobs`` where
it runs, else transformers) and returns the cache's columns for the sampled tokens, so the loss is
the same estimator as on cached rows. With ``distill.teacher_source=online``
the worker's own teacher scores them instead (no pool).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import ray
import torch
from torch import nn

from raykd.config import DistillConfig, OnPolicyConfig, RaykdConfig
from raykd.data.tokens import IGNORE_INDEX
from raykd.vllm_support import resolve_engine


def prompts_of(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """Each row's tokens before its last run of targets (``labels != -100``): what the student completes
    (a prompt's completion; a conversation's last assistant turn, earlier turns as context). A row that
    is all target (plain text) keeps its first token as the prompt; one without a target, its tokens
    (never its padding)."""
    prompts = []
    for ids, labels, length in zip(batch["input_ids"].tolist(), batch["labels"].tolist(),
                                   batch["attention_mask"].sum(-1).tolist()):
        starts = [j for j, label in enumerate(labels[:length])
                  if label != IGNORE_INDEX and (j == 0 or labels[j - 1] == IGNORE_INDEX)]
        prompts.append(ids[: max(1, starts[-1] if starts else length)])
    return prompts


@torch.no_grad()
def sample_rows(model: nn.Module, prompts: list[list[int]], s: OnPolicyConfig, pad_id: int, stop_ids: list[int],
                max_len: int) -> dict[str, np.ndarray]:
    """The student's sampled completions of ``prompts`` as training rows, right-padded ``(B, S)``:
    ``input_ids`` (prompt + completion), ``attention_mask``, ``labels`` (the completion's tokens up to
    and including the first stop token; -100 elsewhere). Sampled in eval mode (no dropout)."""
    width = max(len(p) for p in prompts)
    device = next(model.parameters()).device
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = (torch.arange(width, device=device)[None] >= torch.tensor([width - len(p) for p in prompts],
                                                                       device=device)[:, None]).long()
    training = model.training
    model.eval()
    try:
        new = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=s.temperature,
                             top_p=s.top_p, top_k=0, max_new_tokens=max(1, min(s.max_new_tokens, max_len - width)),
                             pad_token_id=pad_id, eos_token_id=stop_ids)[:, width:].tolist()
    finally:
        model.train(training)
    rows = []
    for prompt, tokens in zip(prompts, new):
        end = next((j + 1 for j, t in enumerate(tokens) if t in stop_ids), len(tokens))
        rows.append((prompt, tokens[:end]))
    length = max(len(p) + len(c) for p, c in rows)
    out = {"input_ids": np.full((len(rows), length), pad_id, dtype=np.int64),
           "attention_mask": np.zeros((len(rows), length), dtype=np.int64),
           "labels": np.full((len(rows), length), IGNORE_INDEX, dtype=np.int64)}
    for i, (prompt, completion) in enumerate(rows):
        n = len(prompt) + len(completion)
        out["input_ids"][i, :n] = prompt + completion
        out["attention_mask"][i, :n] = 1
        out["labels"][i, len(prompt):n] = completion
    return out


def due(seen: int, fraction: float) -> bool:
    """Whether micro-batch number ``seen`` (from 1) is on-policy: spread evenly, ``fraction`` of them."""
    return math.floor(seen * fraction) > math.floor((seen - 1) * fraction)


@dataclass
class OnPolicyCounts:
    batches: int = 0
    generated_tokens: int = 0
    teacher_passes: int = 0  # the pool's forward passes (an online teacher counts its own)


class OnPolicy:
    """Turns ``fraction`` of a worker's micro-batches into on-policy ones and counts the work."""

    def __init__(self, d: DistillConfig, max_len: int, teachers: list | None, pad_id: int, stop_ids: list[int]):
        if not teachers and d.teacher_source != "online":
            raise ValueError("on-policy batches need a teacher to score them: a teacher pool (teacher_pool) or "
                             "distill.teacher_source=online")
        self.settings, self.fraction = d.on_policy, d.on_policy_fraction
        self.teachers, self.pad_id, self.stop_ids = teachers or [], pad_id, stop_ids
        self.max_len, self.seen, self.counts = max_len, 0, OnPolicyCounts()

    def take(self) -> bool:
        """Whether the next micro-batch goes on-policy."""
        self.seen += 1
        return due(self.seen, self.fraction)

    def batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The on-policy version of ``batch``: the student's samples of its prompts, with the pool's
        teacher columns at their positions (none with an online teacher: the loss runs it)."""
        student = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        rows = sample_rows(student, prompts_of(batch), self.settings, self.pad_id, self.stop_ids, self.max_len)
        self.counts.batches += 1
        self.counts.generated_tokens += int((rows["labels"] != IGNORE_INDEX).sum())
        if self.teachers:
            teacher = self.teachers[self.counts.teacher_passes % len(self.teachers)]
            rows |= ray.get(teacher.summarize.remote(rows))
            self.counts.teacher_passes += 1
        device = batch["input_ids"].device
        return {k: torch.tensor(v, device=device) for k, v in rows.items()}  # a copy: Ray's arrays are read-only


def on_policy_for(cfg: RaykdConfig, teachers: list | None, model: nn.Module, tokenizer_dir: str) -> OnPolicy | None:
    """What turns ``distill.on_policy_fraction`` of a student's batches into its own samples (None at 0),
    with the tokenizer's pad id and the student's stop ids."""
    if cfg.distill.on_policy_fraction == 0:
        return None
    from raykd.data.tokens import load_tokenizer, stop_token_ids

    tokenizer = load_tokenizer(tokenizer_dir, cfg.models.trust_remote_code)
    student = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return OnPolicy(cfg.distill, cfg.data.max_seq_len, teachers, tokenizer.pad_token_id,
                    stop_token_ids(student, tokenizer))


def teacher_pool(cfg: RaykdConfig, model_dir: str) -> list:
    """``distill.on_policy.teachers`` actors holding the teacher, each on the pool's CPUs/GPUs: the cache's
    own scorer on the cache's engine (``cache.engine``: vLLM's ``prompt_logprobs`` — top-k only — where
    it runs, else transformers with the sampled tail), so on-policy columns are what a cached row holds."""
    from raykd.cache.scorer import TeacherScorer

    s = cfg.distill.on_policy
    settings = cfg.to_dict()
    settings["cache"]["gpus_per_actor"] = s.gpus_per_teacher  # where the scorer puts the model
    if resolve_engine(cfg.cache.engine, "cache.engine") == "vllm":
        from raykd.cache.vllm_scorer import VLLMTeacherScorer as scorer
    else:
        scorer = TeacherScorer
    actor = ray.remote(scorer).options(num_cpus=s.cpus_per_teacher, num_gpus=s.gpus_per_teacher)
    return [actor.remote(settings, model_dir) for _ in range(s.teachers)]
