"""The cache outlives the job that made it: a real `ray start --head` cluster, separate drivers."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import DEMO, REPO, raykd

pytestmark = pytest.mark.slow

READER = """
import hashlib, sys, ray
from pathlib import Path
from raykd.cache import schema, store
ray.init(namespace=store.NAMESPACE)
cache = Path(sys.argv[1])
if sys.argv[2] == "kill":
    ray.kill(ray.get_actor(store.holder_name(schema.CacheManifest.read(cache)), namespace=store.NAMESPACE))
ds, manifest, source = store.load(cache)
rows = list(ds.iter_rows())
width = rows[0]["values"].shape[-1]
rows = sorted(hashlib.sha1(b"".join(r[c].tobytes() for c in ("input_ids", "values", "tail_values"))).hexdigest()
              for r in rows)
holders = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"] in sys.argv[3:])
print("RESULT", source, len(rows), width, hashlib.sha1("".join(rows).encode()).hexdigest(), *holders)
"""


def read_cache(address: str, cache_dir, mode: str, *holders: str) -> list[str]:
    """(source, rows, values' width, digest of the rows, which of ``holders`` are alive) in a new driver."""
    env = dict(os.environ, RAY_ADDRESS=address)
    proc = subprocess.run([sys.executable, "-c", READER, str(cache_dir), mode, *holders], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return line.split()[1:]


def holder_of(cache_dir) -> str:
    from raykd.cache import schema, store

    return store.holder_name(schema.CacheManifest.read(cache_dir))


def test_jobs_read_the_object_store_copy_of_the_current_cache_only(teacher_run, on_ray_head, tmp_path):
    run, overrides = teacher_run
    copy = tmp_path / "run"
    shutil.copytree(run / "teacher", copy / "teacher")
    cache = copy / "teacher_cache"
    # the 200 labeled rows alone: the test is about where the blocks live, not about generation
    args = ["cache", "--config", str(DEMO), *overrides, f"run_dir={copy}", "cache.include_unlabeled=false",
            "cache.include_eval=false"]
    raykd(*args)  # its driver exits here
    first = holder_of(cache)
    source, rows, width, digest, *alive = read_cache(on_ray_head, cache, "read", first)
    assert (source, int(rows), int(width), alive) == ("object_store", 200, 16, [first])

    recached = raykd(*args, "cache.top_k=8")  # another content: another holder, and the old one freed
    second = holder_of(cache)
    assert second != first and f"({first})" in recached.stdout
    source, rows, width, new_digest, *alive = read_cache(on_ray_head, cache, "read", first, second)
    assert (source, int(rows), int(width), alive) == ("object_store", 200, 8, [second])
    assert new_digest != digest

    fallback = read_cache(on_ray_head, cache, "kill", second)
    assert fallback == ["parquet", rows, width, new_digest]
