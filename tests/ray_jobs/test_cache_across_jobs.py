"""The cache outlives the job that made it: a real `ray start --head` cluster, separate drivers."""

import os
import shutil
import subprocess
import sys

from tests.conftest import DEMO, REPO, raykd

READER = """
import hashlib, sys, ray
from pathlib import Path
from raykd.cache import schema, store
ray.init(namespace=store.NAMESPACE)
cache = Path(sys.argv[1])
if sys.argv[2] == "kill":
    manifest = schema.CacheManifest.read(cache)
    ray.kill(ray.get_actor(store.holder_name(cache, manifest), namespace=store.NAMESPACE))
ds, manifest, source = store.load(cache)
rows = sorted(hashlib.sha1(r["input_ids"].tobytes() + r["values"].tobytes() + r["lse"].tobytes()).hexdigest()
              for r in ds.iter_rows())
print("RESULT", source, len(rows), hashlib.sha1("".join(rows).encode()).hexdigest())
"""


def read_cache(address: str, cache_dir, mode: str) -> list[str]:
    env = dict(os.environ, RAY_ADDRESS=address)
    proc = subprocess.run([sys.executable, "-c", READER, str(cache_dir), mode], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return line.split()[1:]


def test_second_job_reads_object_store_then_parquet_after_actor_dies(teacher_run, on_ray_head, tmp_path):
    run, overrides = teacher_run
    copy = tmp_path / "run"
    shutil.copytree(run / "teacher", copy / "teacher")
    raykd("cache", "--config", str(DEMO), *overrides, f"run_dir={copy}")  # its driver exits here
    source, rows, digest = read_cache(on_ray_head, copy / "teacher_cache", "read")
    assert source == "object_store" and int(rows) == 700
    fallback = read_cache(on_ray_head, copy / "teacher_cache", "kill")
    assert fallback == ["parquet", rows, digest]
