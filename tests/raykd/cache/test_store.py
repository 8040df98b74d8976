"""The cache's object-store copy: used only when it is the cache the manifest describes."""

import json
import shutil

from raykd.cache import store
from raykd.cache.schema import MANIFEST_FILE, CacheManifest


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
    shard = next(iter(record["shards"]))
    record["shards"][shard] = "0" * 64  # what storage now says the shard holds
    (cache / MANIFEST_FILE).write_text(json.dumps(record))
    holder = local_ray.get_actor(name, namespace=store.NAMESPACE)
    # the same holder, now looked up under the new manifest's name
    renamed = store.CacheHolder.options(name=store.holder_name(CacheManifest.read(cache)), namespace=store.NAMESPACE,
                                        lifetime="detached").remote(str(cache.resolve()))
    ds, _, source = store.load(cache)
    assert source == "parquet" and ds.count() == manifest.rows
    assert "does not match its manifest" in capsys.readouterr().out
    for actor in (holder, renamed):
        local_ray.kill(actor)
