"""The cache in the Ray object store.

Two copies: Parquet shards + ``manifest.json`` under ``RUN/teacher_cache/`` (the record), and Arrow
blocks in the Ray object store owned by a detached named actor, so a separately submitted job on
the same cluster reads them without recomputing. When the actor is gone, readers use Parquet.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import ray
import ray.data

from raykd.cache.schema import SHARDS_DIR, CacheManifest

NAMESPACE = "raykd"


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
