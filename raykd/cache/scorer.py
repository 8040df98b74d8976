"""The teacher pass that fills the cache: every source normalised to one schema, then a Ray Data actor
that completes target-less prompts with the teacher and keeps, for every target, the teacher summary
of ``raykd.losses.summarize_teacher`` (top-k log-probs, sampled tail, tail partitions)."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import ray.data
import torch

from raykd.cache.targets import compact_targets
from raykd.config import ConfigError, DataConfig, RaykdConfig, from_dict
from raykd.data.chat import unanswered
from raykd.data.datasets import (
    check_fields,
    conversation_column,
    encode_classification_batch,
    first_rows,
    read_dataset,
    text_column,
)
from raykd.data.examples import Example, Prompt, encode_lm_batch
from raykd.data.tokens import load_tokenizer
from raykd.evaluation.scoring import generate_completions
from raykd.losses import summarize_teacher
from raykd.models.load import load_configured

SUMMARY_POSITIONS = 2048


def normalize(batch: dict, kind: str, labeled: bool, data: dict, spec: str, held_out: bool = False) -> dict:
    """Rows of any source → ``prompt``, ``target`` ('' = the teacher completes it), ``label`` (-1 = unknown),
    ``messages`` (a conversation's JSON text, '' for other rows; one that ends before an assistant turn is
    answered by the teacher), ``held_out`` (scored for evaluation, never trained on)."""
    cfg = DataConfig(**data)
    n = len(next(iter(batch.values())))
    chats = np.full(n, "", dtype=object)
    if kind == "messages":
        chats[:] = [json.dumps(unanswered(c) if not labeled else c)
                    for c in conversation_column(batch, cfg.messages_field, spec, labeled)]
        rows = {"prompt": np.full(n, ""), "target": np.full(n, ""), "label": np.full(n, -1)}
    elif kind == "classification":
        labels = batch[cfg.label_field] if labeled else np.full(n, -1)
        rows = {"prompt": text_column(batch, cfg.text_field, spec), "target": np.full(n, ""),
                "label": np.asarray(labels, dtype=np.int64)}
    elif kind == "prompt":
        targets = text_column(batch, cfg.completion_field, spec) if labeled else np.full(n, "")
        rows = {"prompt": text_column(batch, cfg.prompt_field, spec), "target": targets, "label": np.full(n, -1)}
    else:
        rows = {"prompt": np.full(n, ""), "target": text_column(batch, cfg.text_field, spec), "label": np.full(n, -1)}
    return rows | {"messages": chats, "held_out": np.full(n, held_out)}


def sources(cfg: RaykdConfig) -> list[tuple[str, bool]]:
    """(data spec, labeled) pairs the cache covers."""
    chosen = [(cfg.data.train, True)] * cfg.cache.include_train + [(cfg.data.unlabeled, False)] * \
        cfg.cache.include_unlabeled
    if not chosen:
        raise ConfigError("cache.include_train and cache.include_unlabeled are both false: nothing to cache")
    return chosen


def distillation_rows(cfg: RaykdConfig) -> ray.data.Dataset:
    """Every source read, checked and normalised to one schema, unioned; with ``cache.include_eval``
    also the first ``data.eval_examples`` rows of ``data.eval``, marked ``held_out``."""
    chosen = [(spec, labeled, False) for spec, labeled in sources(cfg)]
    chosen += [(cfg.data.eval, True, True)] * (cfg.cache.include_eval and bool(cfg.data.eval))
    parts = []
    for spec, labeled, held_out in chosen:
        ds = read_dataset(spec)
        kind = check_fields(ds, spec, cfg.data, cfg.task, labeled)
        ds = first_rows(ds, cfg.data.eval_examples if held_out else
                        cfg.data.train_rows if labeled else cfg.data.unlabeled_rows)
        parts.append(ds.map_batches(normalize, batch_format="numpy", fn_kwargs={
            "kind": kind, "labeled": labeled, "data": dataclasses.asdict(cfg.data), "spec": spec,
            "held_out": held_out}))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def rows_of_part(batch: dict[str, np.ndarray], held_out: bool) -> dict[str, np.ndarray]:
    """The scored rows of one part of the cache (training rows, or the held-out ones), without the marker,
    their teacher columns at target positions only (``raykd.cache.targets``)."""
    keep = batch["held_out"] == held_out
    return compact_targets({k: v[keep] for k, v in batch.items() if k != "held_out"})


PROGRESS_EVERY_S = 10.0


def to_example(prompt: str, target: str, messages: str) -> Example:
    """A normalised row (``normalize``) as an example: its conversation, or its (prompt, target) pair."""
    return json.loads(messages) if messages else (str(prompt), str(target))


def needs_reply(example: Example) -> bool:
    """Whether the teacher writes this example's reply: a conversation ending before an assistant turn,
    or a prompt without a target."""
    if isinstance(example, list):
        return example[-1]["role"] != "assistant"
    return not example[1] and bool(example[0])


def with_reply(example: Example, reply: str) -> Example:
    """``example`` completed by the teacher's ``reply``: a new assistant turn, or the pair's target. A
    turn's content is stripped, as chat content is written: the template puts its own space or newline
    before it (a reply decoded after a header that ends before a space starts with that space)."""
    if isinstance(example, list):
        return [*example, {"role": "assistant", "content": reply.strip()}]
    return example[0], reply


class RowScorer:
    """A Ray Data actor holding the teacher: completes target-less prompts, then keeps the teacher's
    summary of every target. Engines differ in ``complete`` and ``summarize`` (and only the
    transformers one scores classifiers)."""

    def __init__(self, cfg_dict: dict, model_dir: str, total_rows: int = 0):
        self.cfg = from_dict(cfg_dict)
        self.tokenizer = load_tokenizer(model_dir, self.cfg.models.trust_remote_code)
        self.vocab = len(self.tokenizer) if self.cfg.task == "causal_lm" else self.cfg.data.num_labels
        self.index_dtype = np.int16 if self.vocab <= np.iinfo(np.int16).max else np.int32
        # progress: this actor's share of the rows (Ray Data spreads the batches over the pool)
        self.share, self.done, self.started = -(-total_rows // self.cfg.cache.actors), 0, time.time()
        self.printed = 0.0

    def __call__(self, batch: dict) -> dict:
        out = self._score(batch)
        self.done += len(next(iter(batch.values())))
        now = time.time()
        if now - self.printed >= PROGRESS_EVERY_S or self.done >= self.share:
            rate = self.done / max(1e-9, now - self.started)
            left = f", ~{max(0, self.share - self.done) / rate:.0f}s left" if self.share > self.done else ""
            print(f"[cache] teacher actor: {self.done}/~{self.share} rows scored, {rate:.1f} rows/s{left}", flush=True)
            self.printed = now
        return out

    def _score(self, batch: dict) -> dict:
        if self.cfg.task == "sequence_classification":
            return self._classification(batch)
        examples = [to_example(p, t, m) for p, t, m in zip(batch["prompt"], batch["target"], batch["messages"])]
        todo = [i for i, e in enumerate(examples) if needs_reply(e)]
        prompts = [examples[i] if isinstance(examples[i], list) else examples[i][0] for i in todo]
        replies = self.complete(prompts) if prompts else []
        for i, reply in zip(todo, replies):
            examples[i] = with_reply(examples[i], reply)
        data = self.cfg.data
        out = encode_lm_batch(self.tokenizer, examples, data.max_seq_len, data.train_on)
        return out | self.summarize(out) | {"held_out": np.asarray(batch["held_out"])}

    def complete(self, prompts: list[Prompt]) -> list[str]:
        """The teacher's completions of ``prompts`` (greedy, or sampled per ``cache.do_sample``)."""
        raise NotImplementedError

    def summarize(self, encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The cached columns of right-padded rows (``encode_lm_batch``): ``(B, S, ...)`` arrays aligned
        with the labels (position j holds the distribution *for* token j, predicted at j-1)."""
        raise NotImplementedError


class TeacherScorer(RowScorer):
    """The transformers teacher: ``generate`` for completions, one forward pass for the summary."""

    def __init__(self, cfg_dict: dict, model_dir: str, total_rows: int = 0):
        super().__init__(cfg_dict, model_dir, total_rows)
        gpus = self.cfg.cache.gpus_per_actor if torch.cuda.is_available() else 0
        self.device = torch.device("cuda" if gpus else "cpu")
        # A teacher too big for one GPU (gpus_per_actor > 1) is spread over the actor's GPUs, in bf16.
        big = {"dtype": torch.bfloat16, "device_map": "auto"} if gpus > 1 else {}
        self.model = load_configured(model_dir, self.cfg, **big).eval()
        if not big:
            self.model.to(self.device)

    @torch.no_grad()
    def complete(self, prompts: list[Prompt]) -> list[str]:
        return generate_completions(self.model, self.tokenizer, prompts, self.cfg.data.max_new_tokens,
                                    self.cfg.data.max_seq_len, len(prompts), self.cfg.cache.do_sample,
                                    self.cfg.cache.sample_temperature)

    @torch.no_grad()
    def summarize(self, encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        summary = self._summary(self._logits(encoded)[..., : self.vocab], encoded["input_ids"])  # each (B, S, ...)
        # Shift so position j holds the distribution *for* token j (predicted at j-1), like labels.
        shifted = {}
        for name, column in summary.items():
            shifted[name] = np.zeros_like(column)
            shifted[name][:, 1:] = column[:, :-1]
        return shifted

    def _logits(self, encoded: dict[str, np.ndarray]) -> torch.Tensor:
        """fp32 teacher logits of a padded batch: ``(B, S, V)`` (causal LM) or ``(B, classes)``."""
        return self.model(input_ids=torch.as_tensor(encoded["input_ids"], device=self.device),
                          attention_mask=torch.as_tensor(encoded["attention_mask"], device=self.device)).logits.float()

    def _summary(self, logits: torch.Tensor, input_ids: np.ndarray) -> dict[str, np.ndarray]:
        """``summarize_teacher`` of ``(B, S, V)`` logits as ``(B, S, ...)`` arrays in the cache's dtypes.
        The tail draws are seeded by the run's seed and the rows, so a re-cache of the same rows by any
        actor, in any order, stores the same samples."""
        seed = (self.cfg.seed * 1_000_003 + int((input_ids.astype(np.int64) % 65521).sum())) % 2**63
        generator = torch.Generator(device=logits.device).manual_seed(seed)
        shape, rows = logits.shape[:-1], logits.reshape(-1, logits.shape[-1])
        # A few positions at a time: each step holds several (positions, V) fp32 temporaries.
        parts = [summarize_teacher(rows[i : i + SUMMARY_POSITIONS], self.cfg.cache.top_k,
                                   self.cfg.cache.tail_samples, generator)
                 for i in range(0, len(rows), SUMMARY_POSITIONS)]
        dtypes = {"values": np.float16, "tail_values": np.float16, "tail_lse": np.float32,
                  "indices": self.index_dtype, "tail_indices": self.index_dtype}
        return {k: torch.cat([p[k] for p in parts]).reshape(*shape, -1).cpu().numpy().astype(dtype)
                for k, dtype in dtypes.items()}

    @torch.no_grad()
    def _classification(self, batch: dict) -> dict:
        out = encode_classification_batch(self.tokenizer, batch["prompt"], self.cfg.data.max_seq_len)
        logits = self._logits(out)[:, None, :]
        given = np.asarray(batch["label"], dtype=np.int64)
        labels = np.where(given >= 0, given, logits[:, 0].argmax(-1).cpu().numpy())[:, None]  # pseudo-labels
        return out | {"labels": labels, "held_out": np.asarray(batch["held_out"])} | self._summary(
            logits, out["input_ids"])  # (B, 1, ...)
