"""The cache's object-store copy: used only when it is the cache the manifest describes."""

import json
import shutil

import pyarrow.parquet as pq
import pytest

from raykd.cache import store
from raykd.cache.schema import MANIFEST_FILE, SHARDS_DIR, CacheManifest, CacheMismatchError, checksum

pytestmark = pytest.mark.slow


def test_loader_falls_back_to_parquet_without_the_actor(teacher_run, local_ray):
    run, _ = teacher_run
    ds, manifest, source = store.load(run / "teacher_cache")
    assert source == "parquet"  # this Ray cluster never held the cache
    assert ds.count() == manifest.rows


def test_a_holder_whose_blocks_differ_from_the_manifest_is_not_used(teacher_run, local_ray, tmp_path, capsys):
    """The holder reports the checksums of the bytes it loaded; a manifest that names other shard bytes
    (say, shards rewritten after the holder loaded them) sends the reader to Parquet."""
    run, _ = teacher_run
    cache = tmp_path / "teacher_cache"
    shutil.copytree(run / "teacher_cache", cache)
    manifest = CacheManifest.read(cache)
    name = store.publish(cache, manifest)
    assert store.load(cache)[2] == "object_store"
    record = json.loads((cache / MANIFEST_FILE).read_text())
    shard = cache / SHARDS_DIR / next(iter(record["shards"]))
    rewritten = tmp_path / shard.name
    pq.write_table(pq.read_table(shard), rewritten, compression="zstd")  # the same rows, other bytes
    record["shards"][shard.name] = checksum(rewritten.read_bytes())
    (cache / MANIFEST_FILE).write_text(json.dumps(record))
    holder = local_ray.get_actor(name, namespace=store.NAMESPACE)
    # a holder under the new manifest's name that loaded the old bytes; then the shard is replaced
    renamed = store.CacheHolder.options(name=store.holder_name(CacheManifest.read(cache)), namespace=store.NAMESPACE,
                                        lifetime="detached").remote(str(cache.resolve()))
    local_ray.get(renamed.describe.remote())
    rewritten.replace(shard)
    ds, _, source = store.load(cache)
    assert source == "parquet" and ds.count() == manifest.rows
    assert "does not match its manifest" in capsys.readouterr().out
    for actor in (holder, renamed):
        local_ray.kill(actor)


@pytest.mark.parametrize("damage", ["truncated", "altered", "missing"])
def test_a_damaged_shard_is_refused_by_name(teacher_run, local_ray, tmp_path, damage):
    """Read from Parquet, every shard's bytes are checked against the manifest's checksums first."""
    run, _ = teacher_run
    cache = tmp_path / "teacher_cache"
    shutil.copytree(run / "teacher_cache", cache)
    shard = sorted((cache / SHARDS_DIR).glob("*.parquet"))[-1]
    data = shard.read_bytes()
    if damage == "truncated":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "altered":
        shard.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    else:
        shard.unlink()
    with pytest.raises(CacheMismatchError, match=f"{shard.name}: cache shard"):
        store.load(cache)
