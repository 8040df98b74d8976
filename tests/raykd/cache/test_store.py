"""The cache's object-store copy: without its holder actor, readers fall back to Parquet."""

from raykd.cache import store


def test_loader_falls_back_to_parquet_without_the_actor(teacher_run, local_ray):
    run, _ = teacher_run
    ds, manifest, source = store.load(run / "teacher_cache")
    assert source == "parquet"  # this Ray cluster never held the cache
    assert ds.count() == manifest.rows
