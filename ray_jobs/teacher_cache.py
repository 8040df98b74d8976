"""The teacher-logit cache: its written schema, where it lives, and how readers get it.

Rows (one per example, fixed width ``S = data.max_seq_len``; targets aligned with ``labels``, i.e.
position j holds the teacher's distribution *for* token j, predicted at position j-1):

    input_ids (S,) int64, attention_mask (S,) int64, labels (S,) int64 (-100 = no target),
    values (S, k) float16   teacher logits at T=1 of its top-k tokens,
    indices (S, k) int16|int32  their token ids,
    lse (S,) float32        log-sum-exp of the teacher logits over the real vocabulary.

Sequence classification stores one position per row (``labels`` and ``lse`` of shape (1,)).

Two copies: Parquet shards + ``manifest.json`` under ``RUN/teacher_cache/`` (the record), and Arrow
blocks in the Ray object store owned by a detached named actor, so a separately submitted job on
the same cluster reads them without recomputing. When the actor is gone, readers use Parquet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.data

from ray_jobs.config import ConfigError

SCHEMA_VERSION = 1
NAMESPACE = "raykd"
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


def holder_name(cache_dir: Path, manifest: CacheManifest) -> str:
    """Actor name: one holder per cache directory and content."""
    key = hashlib.sha256(f"{cache_dir.resolve()}:{manifest.teacher_hash}:{manifest.rows}".encode()).hexdigest()
    return f"raykd-cache-{key[:16]}"


@ray.remote(num_cpus=0)
class CacheHolder:
    """Owns the cache's Arrow blocks in the object store; they live as long as this detached actor."""

    def __init__(self, shards_dir: str):
        import pyarrow.parquet as pq

        table = pq.read_table(shards_dir)
        # ray.put inside the actor: the actor, not the submitting driver, owns the objects.
        self.refs = [ray.put(batch) for batch in _split(table, 4096)]

    def blocks(self) -> list[ray.ObjectRef]:
        return self.refs


def _split(table, rows: int):
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)]


def publish(cache_dir: Path, manifest: CacheManifest) -> str:
    """Load the Parquet shards into the object store under a detached actor; returns its name."""
    name = holder_name(cache_dir, manifest)
    holder = CacheHolder.options(name=name, namespace=NAMESPACE, lifetime="detached",
                                 get_if_exists=True).remote(str(cache_dir / SHARDS_DIR))
    ray.get(holder.blocks.remote())
    return name


def load(cache_dir: Path) -> tuple[ray.data.Dataset, CacheManifest, str]:
    """The cache as a Ray dataset: from the object store when its actor lives, else from Parquet.

    Returns ``(dataset, manifest, source)`` with source ``"object_store"`` or ``"parquet"``.
    """
    manifest = CacheManifest.read(cache_dir)
    try:
        holder = ray.get_actor(holder_name(cache_dir, manifest), namespace=NAMESPACE)
        refs = ray.get(holder.blocks.remote())
        return ray.data.from_arrow_refs(refs), manifest, "object_store"
    except (ValueError, ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
        return ray.data.read_parquet(str(cache_dir / SHARDS_DIR)), manifest, "parquet"
