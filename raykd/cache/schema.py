"""The teacher-logit cache's written schema, its manifest, and the checks readers make.

Rows (one per example, fixed width ``S = data.max_seq_len``; targets aligned with ``labels``, i.e.
position j holds the teacher's distribution *for* token j, predicted at position j-1):

    input_ids (S,) int64, attention_mask (S,) int64, labels (S,) int64 (-100 = no target),
    values (S, k) float16   teacher logits at T=1 of its top-k tokens,
    indices (S, k) int16|int32  their token ids,
    lse (S,) float32        log-sum-exp of the teacher logits over the real vocabulary.

Sequence classification stores one position per row (``labels`` and ``lse`` of shape (1,)).

Readers check a cache against the manifest and the configured teacher and tokenizer before use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from raykd.config import ConfigError

SCHEMA_VERSION = 1
SHARDS_DIR, MANIFEST_FILE = "shards", "manifest.json"


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

    def write(self, cache_dir: Path) -> None:
        (cache_dir / MANIFEST_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

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


def fingerprint(directory: str, names: tuple[str, ...]) -> str:
    """SHA-256 over the named files that exist in ``directory`` (all of a small file; for weight
    files, their size plus the first and last MiB, so a 140 GB teacher hashes in milliseconds)."""
    digest = hashlib.sha256()
    for path in sorted(p for name in names for p in Path(directory).glob(name)):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            digest.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), 2)
                digest.update(f.read())
    return digest.hexdigest()[:16]


def teacher_hash(model_dir: str) -> str:
    return fingerprint(model_dir, ("config.json", "*.safetensors", "*.bin"))


def tokenizer_hash(tokenizer_dir: str) -> str:
    return fingerprint(tokenizer_dir, ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt"))


def check_compatible(manifest: CacheManifest, teacher_dir: str, tokenizer_dir: str, cache_dir: Path) -> None:
    """Refuse a cache whose teacher or tokenizer differs from the ones configured now."""
    if manifest.teacher_hash != teacher_hash(teacher_dir):
        raise CacheMismatchError(f"{cache_dir}: cache was made by another teacher (hash {manifest.teacher_hash}, "
                                 f"{teacher_dir} is {teacher_hash(teacher_dir)}); re-run `raykd cache`")
    if manifest.tokenizer_hash != tokenizer_hash(tokenizer_dir):
        raise CacheMismatchError(f"{cache_dir}: cache was made with another tokenizer than {tokenizer_dir}")




def check_top_k(key: str, k: int, manifest: CacheManifest, cache_dir: Path) -> None:
    """Refuse asking for more cached logits per token than the cache holds."""
    if k > manifest.k:
        raise ConfigError(f"'{key}' asks for {k} logits per token but the cache in {cache_dir} holds only "
                          f"{manifest.k} (re-run `raykd cache` with a larger cache.top_k)")
