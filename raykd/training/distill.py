"""What distillation needs besides the loss maths: its training data (the cache, or labels only) and
what it resolves once (``DistillSetup``), the alignment of student positions with cached targets, and
the loss function a training step calls. The distillation job and every Tune trial use these."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray.data
import torch

from raykd.cache.schema import check_compatible
from raykd.cache.store import load
from raykd.config import DistillConfig, RaykdConfig
from raykd.data.datasets import tokenized_dataset
from raykd.data.tokens import load_tokenizer
from raykd.losses import TEACHER_KEYS, distillation_loss, fused_distillation_loss
from raykd.models.load import ForwardCounter, resolve_tokenizer
from raykd.models.student import TEACHER_LAYERS
from raykd.models.student_head import fuses_exactly, head_inputs, output_head
from raykd.models.teacher import teacher_dir
from raykd.training.on_policy import OnPolicy

TEACHER_COLUMNS = TEACHER_KEYS


@dataclass(frozen=True)
class DistillSetup:
    """What a distillation resolves once, on the driver, and hands to its workers and trials.

    ``teacher``: the teacher's directory (``cache.teacher`` or ``RUN/teacher``), None when the run needs
    no teacher (labels only, a student not built from teacher blocks); ``tokenizer``: the directory of
    the tokenizer the targets were made with; ``vocab``: the target vocabulary (the tokenizer's size, or
    ``num_labels`` for a classifier); ``source``: where the training rows came from."""

    teacher: str | None
    tokenizer: str
    vocab: int
    source: str


def student_positions(logits: torch.Tensor, batch: dict, task: str) -> tuple[torch.Tensor, dict]:
    """Align student logits with targets and flatten: ``(B, S, V)`` → ``(n, V)`` plus the batch's
    labels and teacher columns, all ``(n, ...)``. Causal LM: position j-1 predicts token j."""
    if task == "sequence_classification":
        logits, targets = logits[:, None, :], batch
    else:
        logits, targets = logits[:, :-1], {k: v[:, 1:] for k, v in batch.items() if k != "input_ids"}
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in targets.items() if k in ("labels", *TEACHER_COLUMNS)}
    return logits.reshape(-1, logits.shape[-1]), flat


def make_loss_fn(d: DistillConfig, task: str, vocab: int, teacher: ForwardCounter | None,
                 on_policy: OnPolicy | None = None):
    """``loss_fn(model, batch) -> (summed loss, target count, summed soft and hard parts)`` (``LossFn``) for
    the configured teacher source; with
    ``distill.fused_loss`` (causal LMs whose logits are a plain linear head of their hidden states,
    checked on the first batch) the student's LM head runs inside the chunked loss. With ``on_policy``,
    its share of batches is replaced by the student's own samples, scored by the teacher, on which the
    soft loss alone is taken (their labels are the student's tokens: no ground truth to learn)."""
    fused: dict[str, bool] = {}

    def teacher_signal(batch: dict, flat: dict) -> dict:
        if teacher is None:
            return {k: flat[k] for k in TEACHER_COLUMNS if k in flat}
        with torch.no_grad():
            t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :vocab]
        return {"logits": student_positions(t, batch, task)[0]}

    def alpha(signal: dict, sampled: bool) -> float:
        return 1.0 if sampled else (d.alpha if signal else 0.0)

    def loss_fn(model, batch):
        sampled = on_policy is not None and on_policy.take()
        if sampled:
            batch = on_policy.batch(model, batch)
        head = output_head(model) if d.fused_loss and task == "causal_lm" else None
        if head is not None and "ok" not in fused:
            fused["ok"] = fuses_exactly(model, head, batch, vocab)
            if not fused["ok"]:
                print("[distill] this student's logits are not a plain linear head of its hidden states: "
                      "using the unfused loss", flush=True)
        if head is not None and fused["ok"]:
            hidden = head_inputs(model, head, batch["input_ids"], batch["attention_mask"])
            flat_hidden, flat = student_positions(hidden, batch, task)
            signal = teacher_signal(batch, flat)
            bias = None if head.bias is None else head.bias[:vocab]
            out = fused_distillation_loss(flat_hidden, head.weight[:vocab], flat["labels"], signal,
                                          alpha(signal, sampled), d.temperature, d.chunk_tokens, bias, d.loss,
                                          d.jsd_beta)
        else:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :vocab]
            flat_logits, flat = student_positions(logits, batch, task)
            signal = teacher_signal(batch, flat)
            out = distillation_loss(flat_logits, flat["labels"], signal, alpha(signal, sampled), d.temperature,
                                    d.chunk_tokens, d.loss, d.jsd_beta)
        tokens, weight = out["tokens"], alpha(signal, sampled)
        # each part over the targets it was taken on (none where its weight is 0), the same names on every rank
        parts = {"soft_loss": (out["soft"] * tokens, tokens * (weight > 0)),
                 "hard_loss": (out["hard"] * tokens, tokens * (weight < 1))}
        return out["loss"] * tokens, tokens, parts

    return loss_fn


@torch.no_grad()
def held_out_divergence(model, rows: dict[str, np.ndarray], vocab: int, task: str, loss: str = "forward_kl",
                        batch_size: int = 64) -> float:
    """Mean divergence ``loss`` (``LOSSES``) of teacher and student at T = 1 per target (the loss's soft term at
    alpha = 1) on cached held-out rows (``raykd.cache.store.held_out_rows``: ``(R, S, ...)`` arrays): no
    teacher runs. With ``tvd``, one minus it is the student's acceptance rate as the teacher's draft."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(rows["input_ids"]), batch_size):
        batch = {k: torch.as_tensor(v[start : start + batch_size]).to(device) for k, v in rows.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :vocab]
        flat_logits, flat = student_positions(logits.float(), batch, task)
        teacher = {k: flat[k] for k in TEACHER_COLUMNS if k in flat}
        out = distillation_loss(flat_logits, flat["labels"], teacher, alpha=1.0, temperature=1.0, loss=loss)
        total, count = total + out["loss"].item() * int(out["tokens"]), count + int(out["tokens"])
    return total / max(1, count)


def training_data(cfg: RaykdConfig) -> tuple[ray.data.Dataset, DistillSetup]:
    """The training rows for ``distill.teacher_source`` and the run's ``DistillSetup``."""
    if cfg.distill.teacher_source == "none":
        teacher = teacher_dir(cfg) if cfg.models.student.startswith(TEACHER_LAYERS) else None
        tokenizer = resolve_tokenizer(cfg.models)
        vocab = len(load_tokenizer(tokenizer)) if cfg.task == "causal_lm" else cfg.data.num_labels
        data = tokenized_dataset(cfg.data.train, cfg.data, cfg.task, tokenizer,
                                 trust_remote_code=cfg.models.trust_remote_code, rows=cfg.data.train_rows)
        return data, DistillSetup(teacher, tokenizer, vocab, "data.train")
    cache_dir = cfg.stage_dir("teacher_cache")
    ds, manifest, source = load(cache_dir)
    teacher = teacher_dir(cfg)
    check_compatible(manifest, teacher, teacher, cache_dir)
    if cfg.distill.teacher_source == "online":
        ds = ds.drop_columns([c for c in TEACHER_COLUMNS if c in ds.columns()])  # a vLLM cache has no tail
    return ds, DistillSetup(teacher, teacher, manifest.vocab_size, source)
