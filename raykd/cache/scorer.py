"""The teacher pass that fills the cache: every source normalised to one schema, then a Ray Data actor
that completes target-less prompts with the teacher and keeps the top-k logits of every target."""

from __future__ import annotations

import dataclasses

import numpy as np
import ray.data
import torch

from raykd.config import ConfigError, DataConfig, RaykdConfig, from_dict
from raykd.data import check_fields, encode_classification_batch, encode_lm_batch, read_dataset, text_column
from raykd.models import load_configured
from raykd.scoring import generate_completions
from raykd.tokens import load_tokenizer


def normalize(batch: dict, kind: str, labeled: bool, data: dict, spec: str) -> dict:
    """Rows of any source → ``prompt``, ``target`` ('' = the teacher completes it), ``label`` (-1 = unknown)."""
    cfg = DataConfig(**data)
    n = len(next(iter(batch.values())))
    if kind == "classification":
        labels = batch[cfg.label_field] if labeled else np.full(n, -1)
        return {"prompt": text_column(batch, cfg.text_field, spec), "target": np.full(n, ""),
                "label": np.asarray(labels, dtype=np.int64)}
    if kind == "prompt":
        targets = text_column(batch, cfg.completion_field, spec) if labeled else np.full(n, "")
        return {"prompt": text_column(batch, cfg.prompt_field, spec), "target": targets, "label": np.full(n, -1)}
    return {"prompt": np.full(n, ""), "target": text_column(batch, cfg.text_field, spec), "label": np.full(n, -1)}


def sources(cfg: RaykdConfig) -> list[tuple[str, bool]]:
    """(data spec, labeled) pairs the cache covers."""
    chosen = [(cfg.data.train, True)] * cfg.cache.include_train + [(cfg.data.unlabeled, False)] * \
        cfg.cache.include_unlabeled
    if not chosen:
        raise ConfigError("cache.include_train and cache.include_unlabeled are both false: nothing to cache")
    return chosen


def distillation_rows(cfg: RaykdConfig) -> ray.data.Dataset:
    """Every source read, checked and normalised to one schema, unioned."""
    parts = []
    for spec, labeled in sources(cfg):
        ds = read_dataset(spec)
        kind = check_fields(ds, spec, cfg.data, cfg.task, labeled)
        parts.append(ds.map_batches(normalize, batch_format="numpy", fn_kwargs={
            "kind": kind, "labeled": labeled, "data": dataclasses.asdict(cfg.data), "spec": spec}))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


class TeacherScorer:
    """Ray Data actor: holds the teacher; completes target-less prompts, then keeps top-k per target."""

    def __init__(self, cfg_dict: dict, model_dir: str):
        self.cfg = from_dict(cfg_dict)
        gpus = self.cfg.cache.gpus_per_actor if torch.cuda.is_available() else 0
        self.device = torch.device("cuda" if gpus else "cpu")
        # A teacher too big for one GPU (gpus_per_actor > 1) is spread over the actor's GPUs, in bf16.
        big = {"dtype": torch.bfloat16, "device_map": "auto"} if gpus > 1 else {}
        self.model = load_configured(model_dir, self.cfg, **big).eval()
        if not big:
            self.model.to(self.device)
        self.tokenizer = load_tokenizer(model_dir, self.cfg.models.trust_remote_code)
        self.vocab = len(self.tokenizer) if self.cfg.task == "causal_lm" else self.cfg.data.num_labels
        self.index_dtype = np.int16 if self.vocab <= np.iinfo(np.int16).max else np.int32

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        if self.cfg.task == "sequence_classification":
            return self._classification(batch)
        prompts, targets = list(batch["prompt"]), list(batch["target"])
        todo = [i for i, t in enumerate(targets) if not t and prompts[i]]
        if todo:
            done = generate_completions(self.model, self.tokenizer, [prompts[i] for i in todo],
                                        self.cfg.data.max_new_tokens, self.cfg.data.max_seq_len, len(todo),
                                        self.cfg.cache.do_sample, self.cfg.cache.sample_temperature)
            for i, completion in zip(todo, done):
                targets[i] = completion
        out = encode_lm_batch(self.tokenizer, list(zip(prompts, targets)), self.cfg.data.max_seq_len)
        logits = self._logits(out)[..., : self.vocab]
        values, indices, lse = self._topk(logits)  # (B, S, k), (B, S, k), (B, S) at the predicting position
        # Shift so position j holds the distribution *for* token j (predicted at j-1), like labels.
        out_values, out_indices, out_lse = np.zeros_like(values), np.zeros_like(indices), np.zeros_like(lse)
        out_values[:, 1:], out_indices[:, 1:], out_lse[:, 1:] = values[:, :-1], indices[:, :-1], lse[:, :-1]
        return out | {"values": out_values, "indices": out_indices, "lse": out_lse}

    def _logits(self, encoded: dict[str, np.ndarray]) -> torch.Tensor:
        """fp32 teacher logits of a padded batch: ``(B, S, V)`` (causal LM) or ``(B, classes)``."""
        return self.model(input_ids=torch.as_tensor(encoded["input_ids"], device=self.device),
                          attention_mask=torch.as_tensor(encoded["attention_mask"], device=self.device)).logits.float()

    def _topk(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = min(self.cfg.cache.top_k, logits.shape[-1])
        values, indices = logits.topk(k, dim=-1)
        lse = torch.logsumexp(logits, dim=-1)
        return (values.half().cpu().numpy(), indices.cpu().numpy().astype(self.index_dtype),
                lse.cpu().numpy().astype(np.float32))

    def _classification(self, batch: dict) -> dict:
        out = encode_classification_batch(self.tokenizer, batch["prompt"], self.cfg.data.max_seq_len)
        logits = self._logits(out)[:, None, :]
        values, indices, lse = self._topk(logits)  # (B, 1, k)
        given = np.asarray(batch["label"], dtype=np.int64)
        labels = np.where(given >= 0, given, logits[:, 0].argmax(-1).cpu().numpy())[:, None]  # pseudo-labels
        return out | {"labels": labels, "values": values, "indices": indices, "lse": lse}
