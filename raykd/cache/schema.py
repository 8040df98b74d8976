"""The teacher-logit cache's written schema, its manifest, and the checks readers make.

Rows (one per example; token columns of fixed width ``S = data.max_seq_len``; the teacher's columns
hold its T target positions only, T = the row's ``labels != -100``, in position order: position j's
entry is the teacher's distribution *for* token j, predicted at position j-1; ``raykd.cache.targets``
expands them back to ``(S, ...)`` for training):

    input_ids (S,) int64, attention_mask (S,) int64, labels (S,) int64 (-100 = no target),
    values (T, k) float16        teacher log-probabilities at T=1 of its top-k tokens,
    indices (T, k) int16|int32   their token ids,
    tail_values (T, m) float16   log-probabilities of m tokens sampled from the tempered tail,
    tail_indices (T, m) int16|int32  their token ids,
    tail_lse (T, G) float32      log sum over the tail of exp(log-prob / T) at G temperatures.

A vLLM cache (``engine = "vllm"``) has no tail columns: vLLM's ``prompt_logprobs`` give the top-k only.

(``raykd.losses`` says why and how the loss uses them.) Sequence classification stores one position
per row. The manifest records the values' kind, the tail's temperatures and a SHA-256 per shard.
The teacher's rows of the held-out eval data are kept apart, in ``held_out/`` (same columns).

Readers check a cache against the manifest and the configured teacher and tokenizer before use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from raykd.config import ConfigError
from raykd.models.hashes import model_hash, tokenizer_hash

SCHEMA_VERSION = 4  # any change to the rows or the manifest bumps it; readers refuse another version
SHARDS_DIR, HELD_OUT_DIR, MANIFEST_FILE = "shards", "held_out", "manifest.json"


class CacheMismatchError(ConfigError):
    """A cache made by another teacher, tokenizer or schema: refused, never silently used."""


@dataclass
class CacheManifest:
    schema_version: int
    teacher_hash: str
    tokenizer_hash: str
    vocab_size: int
    k: int
    values_dtype: str
    indices_dtype: str
    max_seq_len: int
    task: str
    rows: int
    tokens: int  # positions with a target (what the loss sees)
    bytes: int  # Parquet bytes on storage
    sources: list[str]
    teacher_forward_s: float
    values_kind: str  # "logprob": log softmax of the teacher's logits at T=1
    engine: str  # "transformers" (full logits: sampled tail) or "vllm" (prompt_logprobs: top-k only)
    tail_samples: int  # 0: no tail columns (the loss makes the tail one bucket)
    tail_temperatures: list[float]
    shards: dict[str, str]  # shard file name -> SHA-256 of its bytes
    # The teacher on data.eval's first rows (HELD_OUT_DIR, same columns), never trained on: what
    # tune.metric=kl compares students with. Empty without cache.include_eval.
    held_out_rows: int = 0
    held_out_shards: dict[str, str] = dataclasses.field(default_factory=dict)

    def content_key(self) -> str:
        """What names this cache's content: its shards' checksums (and so its rows, k, teacher...)."""
        return hashlib.sha256(json.dumps(self.shards, sort_keys=True).encode()).hexdigest()[:16]

    def write(self, cache_dir: Path) -> None:
        """Published last and atomically (a rename): a reader sees the whole manifest or none."""
        staged = cache_dir / f".{MANIFEST_FILE}.partial"
        staged.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        os.replace(staged, cache_dir / MANIFEST_FILE)

    @classmethod
    def read(cls, cache_dir: Path) -> CacheManifest:
        path = cache_dir / MANIFEST_FILE
        if not path.exists():
            raise ConfigError(f"{path}: no teacher cache here; run `raykd cache` first")
        data = json.loads(path.read_text())
        if data.get("schema_version") != SCHEMA_VERSION:
            raise CacheMismatchError(f"{path}: cache schema {data.get('schema_version')} != {SCHEMA_VERSION}; "
                                     "re-run `raykd cache`")
        return cls(**data)


def checksum(data: bytes) -> str:
    """A shard's checksum (SHA-256 of its bytes)."""
    return hashlib.sha256(data).hexdigest()


def check_shards(directory: Path, expected: dict[str, str], found: dict[str, str]) -> None:
    """``found`` (file name -> checksum of the files in ``directory``) must be the manifest's ``expected``:
    a missing, truncated, altered or unlisted shard is a CacheMismatchError naming it."""
    for name in sorted(expected.keys() | found.keys()):
        if name not in found:
            problem = "is missing (the manifest lists it)"
        elif name not in expected:
            problem = "is not in the manifest"
        elif found[name] != expected[name]:
            problem = "does not match the manifest's checksum (truncated or altered)"
        else:
            continue
        raise CacheMismatchError(f"{directory / name}: cache shard {problem}; re-run `raykd cache`")


def check_compatible(manifest: CacheManifest, teacher_dir: str, tokenizer_dir: str, cache_dir: Path) -> None:
    """Refuse a cache whose teacher or tokenizer differs from the ones configured now (the teacher's
    hash is recorded beside the cache, so a large external teacher is hashed once)."""
    now = model_hash(teacher_dir, cache_dir.parent)
    if manifest.teacher_hash != now:
        raise CacheMismatchError(f"{cache_dir}: cache was made by another teacher (hash {manifest.teacher_hash}, "
                                 f"{teacher_dir} is {now}); re-run `raykd cache`")
    if manifest.tokenizer_hash != tokenizer_hash(tokenizer_dir):
        raise CacheMismatchError(f"{cache_dir}: cache was made with another tokenizer than {tokenizer_dir}")
