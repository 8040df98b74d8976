"""The cache in the Ray object store.

Two copies: Parquet shards + ``manifest.json`` under ``RUN/teacher_cache/`` (the record), and Arrow
blocks in the Ray object store owned by a detached named actor, so a separately submitted job on
the same cluster reads them without recomputing. The actor owns the blocks without holding them: tasks
read the shards, one block per shard, wherever the scheduler puts them.

The holder is named by the cache's content (the manifest's per-shard SHA-256s), and it reports the
checksums of the bytes it actually loaded. Publishing a new cache in a directory kills the holders of
that directory's earlier caches (their memory is freed). A reader uses the object store only when
the holder's checksums match the manifest on storage; otherwise, or when no holder lives, Parquet.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import ray
import ray.data

from raykd.cache.schema import HELD_OUT_DIR, SHARDS_DIR, CacheManifest, check_shards, checksum
from raykd.cache.targets import expand_targets
from raykd.config import ConfigError

NAMESPACE = "raykd"
PREFIX = "raykd-cache-"


def holder_name(manifest: CacheManifest) -> str:
    return PREFIX + manifest.content_key()


@ray.remote(num_cpus=0.25, num_returns=2)
def _load_shard(path: str):
    """(SHA-256 of a Parquet shard's bytes, its Arrow table), from the same bytes. Run as a task by the
    holder, so the table lands in the object store of whichever node ran it, owned by the holder."""
    import pyarrow.parquet as pq

    data = Path(path).read_bytes()
    return checksum(data), pq.read_table(io.BytesIO(data))


@ray.remote(num_cpus=0.25)
def _shard_checksum(path: str) -> str:
    return checksum(Path(path).read_bytes())


def shard_checksums(directory: Path) -> dict[str, str]:
    """File name -> checksum of each Parquet shard in ``directory``, one Ray task per shard."""
    paths = sorted(directory.glob("*.parquet"))
    return dict(zip((p.name for p in paths), ray.get([_shard_checksum.remote(str(p)) for p in paths])))


def verified_shards(directory: Path, expected: dict[str, str]) -> list[str]:
    """The paths of ``directory``'s Parquet shards once their checksums match the manifest's
    ``expected``; CacheMismatchError naming the first that does not."""
    found = shard_checksums(directory)
    check_shards(directory, expected, found)
    return [str(directory / name) for name in sorted(found)]


@ray.remote(num_cpus=0)
class CacheHolder:
    """Owns the cache's Arrow blocks in the object store; they live as long as this detached actor.

    The blocks never pass through this actor's heap: it submits one task per Parquet shard (spread over
    the cluster's nodes, each task's output stored where it ran, spilled to disk by Ray when an object
    store fills) and keeps the references; only the checksums come back to it."""

    def __init__(self, cache_dir: str):
        self.cache_dir = cache_dir
        paths = sorted((Path(cache_dir) / SHARDS_DIR).glob("*.parquet"))
        loaded = [_load_shard.remote(str(path)) for path in paths]
        self.checksums = {path.name: ray.get(digest) for path, (digest, _) in zip(paths, loaded)}
        # submitted by this actor, so this actor (not the job that published the cache) owns the blocks
        self.refs = [block for _, block in loaded]

    def describe(self) -> dict:
        return {"cache_dir": self.cache_dir, "checksums": self.checksums, "blocks": self.refs}


def publish(cache_dir: Path, manifest: CacheManifest) -> str:
    """Load the Parquet shards into the object store under a detached actor named by their content,
    after killing this directory's holders of other content; returns the actor's name."""
    name = holder_name(manifest)
    for old in _holders_of(cache_dir):
        if old != name:
            ray.kill(ray.get_actor(old, namespace=NAMESPACE))
            print(f"[cache] freed the object-store copy of the previous cache in {cache_dir} ({old})", flush=True)
    holder = CacheHolder.options(name=name, namespace=NAMESPACE, lifetime="detached",
                                 get_if_exists=True).remote(str(cache_dir.resolve()))
    ray.get(holder.describe.remote())
    return name


def _describe(name: str) -> dict | None:
    """The named holder's ``describe()``, or None when no such holder lives."""
    try:
        return ray.get(ray.get_actor(name, namespace=NAMESPACE).describe.remote())
    except (ValueError, ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
        return None


def _holders_of(cache_dir: Path) -> list[str]:
    """Names of the live holders whose cache lives in ``cache_dir``."""
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == NAMESPACE and a["name"].startswith(PREFIX)]
    return [n for n in names if (_describe(n) or {}).get("cache_dir") == str(cache_dir.resolve())]


def block_source(ds: ray.data.Dataset, manifest: CacheManifest) -> str:
    """Where ``ds``'s blocks are, checked on the blocks themselves: ``"object_store"`` when every one
    is an object of the cache's holder, else ``"copy"`` (read from Parquet, or transformed since)."""
    held = set((_describe(holder_name(manifest)) or {}).get("blocks", []))
    refs = ds.to_arrow_refs()
    return "object_store" if refs and set(refs) <= held else "copy"


def load(cache_dir: Path) -> tuple[ray.data.Dataset, CacheManifest, str]:
    """The cache as a Ray dataset: from the object store when a holder of exactly the manifest's
    shards lives, else from Parquet. Returns ``(dataset, manifest, source)``, source ``"object_store"``
    or ``"parquet"``."""
    manifest = CacheManifest.read(cache_dir)
    held = _describe(holder_name(manifest))
    if held is not None and held["checksums"] == manifest.shards:
        return ray.data.from_arrow_refs(held["blocks"]), manifest, "object_store"
    if held is not None:
        print(f"[raykd] the object-store copy of {cache_dir} does not match its manifest: reading Parquet",
              flush=True)
    return ray.data.read_parquet(verified_shards(cache_dir / SHARDS_DIR, manifest.shards)), manifest, "parquet"


def held_out_rows(cache_dir: Path, manifest: CacheManifest) -> dict:
    """The teacher's cached rows of the held-out eval data as ``(R, S, ...)`` numpy arrays, after
    checking their bytes against the manifest; raises ConfigError when the cache has none."""
    if not manifest.held_out_rows:
        raise ConfigError(f"{cache_dir} holds no held-out teacher rows: re-run `raykd cache` with "
                          "cache.include_eval=true and data.eval set")
    return dense_rows(verified_shards(cache_dir / HELD_OUT_DIR, manifest.held_out_shards))


def dense_rows(paths: str | list[str], limit: int | None = None) -> dict[str, np.ndarray]:
    """Up to ``limit`` cached rows (all by default) of Parquet files or a directory of them, read with Ray
    Data (its tensor columns' shapes differ between files), teacher columns expanded to their positions:
    ``(R, S, ...)`` arrays (``raykd.cache.targets``)."""
    data = ray.data.read_parquet(paths)
    return expand_targets(data.take_batch(limit or data.count(), batch_format="numpy"))
