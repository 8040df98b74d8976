"""The cache job: its manifest and shards follow the schema; unlabeled prompts get teacher completions;
killed while writing, it leaves nothing half-written to read."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from raykd.builtin.data import generate_split
from raykd.cache import store
from raykd.cache.schema import MANIFEST_FILE, CacheManifest, checksum
from raykd.cache.store import dense_rows
from raykd.config import ConfigError, load_config
from raykd.losses import TEACHER_KEYS
from tests.conftest import DEMO, REPO, raykd, read_metrics

pytestmark = pytest.mark.slow


def test_manifest_and_shards_follow_the_schema(teacher_run, local_ray):
    """Token columns are fixed-width; the teacher's columns hold the target positions only, and expand
    back to their positions (a position's top-k and tail mass are a distribution)."""
    run, _ = teacher_run
    manifest = CacheManifest.read(run / "teacher_cache")
    assert manifest.rows == 200 + 500 and manifest.k == 16
    assert manifest.values_dtype == "float16" and manifest.indices_dtype == "int16"
    assert manifest.values_kind == "logprob" and manifest.tail_samples == 32 and manifest.engine == "transformers"
    shards = run / "teacher_cache" / "shards"
    assert manifest.shards == {p.name: checksum(p.read_bytes()) for p in shards.glob("*.parquet")}
    stored = local_ray.data.read_parquet(str(shards)).take(manifest.rows)
    assert len(stored) == manifest.rows and set(stored[0]) >= {"input_ids", "labels", "attention_mask", *TEACHER_KEYS}
    targets = [int((r["labels"] != -100).sum()) for r in stored]
    assert [r["values"].shape for r in stored] == [(t, 16) for t in targets]  # no rows for prompt or padding
    assert [r["tail_lse"].shape[0] for r in stored] == targets
    assert sum(targets) == manifest.tokens < len(stored) * manifest.max_seq_len
    rows = dense_rows(str(shards), 1)
    valid = rows["labels"][0] != -100
    top, tail = rows["values"][0].astype(np.float64)[valid], rows["tail_lse"][0].astype(np.float64)[valid]
    # log-probs: the top-k mass and the tail's exact mass (tail_lse at T=1) add up to one
    assert np.allclose(np.exp(top).sum(-1) + np.exp(tail[:, 0]), 1.0, atol=0.02)
    assert not rows["values"][0][~valid].any()  # zeros off the targets once expanded
    metrics = read_metrics(run, "teacher_cache")
    assert metrics["bytes_per_token"] < metrics["full_fp32_bytes_per_token"]


def test_unlabeled_prompts_get_teacher_completions_as_targets(teacher_run, local_ray):
    run, _ = teacher_run
    rows = dense_rows(str(run / "teacher_cache" / "shards"))
    # every row, labeled or not, has targets (unlabeled ones: the teacher's own completion)
    assert ((rows["labels"] != -100).sum(axis=1) > 0).all()
    # the top-1 cached token at a target position is usually the target itself for a fine-tuned teacher
    valid = rows["labels"] != -100
    assert (rows["indices"][..., 0][valid] == rows["labels"][valid]).mean() > 0.5


def test_held_out_rows_are_kept_apart_and_measure_a_students_kl_without_the_teacher(teacher_run, local_ray):
    """The eval split's rows are scored into held_out/ (never into the training shards); the KL a sweep
    ranks by (tune.metric=kl) is about 0 for the teacher itself and clearly above it for a student base, and
    the acceptance rate (tune.metric=acceptance) about 1 for the teacher and clearly below for the base."""
    from transformers import AutoModelForCausalLM

    from raykd.cache import store
    from raykd.models.load import load_configured
    from raykd.training.distill import held_out_divergence

    run, overrides = teacher_run
    cache = run / "teacher_cache"
    manifest = CacheManifest.read(cache)
    assert manifest.held_out_rows == 200 and manifest.held_out_shards == {
        p.name: checksum(p.read_bytes()) for p in (cache / "held_out").glob("*.parquet")}
    rows = store.held_out_rows(cache, manifest)
    assert rows["input_ids"].shape == (200, manifest.max_seq_len) and "held_out" not in rows
    teacher = AutoModelForCausalLM.from_pretrained(run / "teacher")
    student = load_configured("builtin:student", load_config(DEMO, overrides))
    own, other = (held_out_divergence(m, rows, manifest.vocab_size, "causal_lm") for m in (teacher, student))
    assert own < 0.05 and other > 20 * own, (own, other)
    # tune.metric=acceptance: the teacher as its own draft is accepted almost always, the base far less
    own, other = (1 - held_out_divergence(m, rows, manifest.vocab_size, "causal_lm", "tvd") for m in (teacher, student))
    assert own > 0.97 and other < own - 0.2, (own, other)


def test_a_cache_job_killed_while_writing_leaves_no_partial_cache(teacher_run, local_ray, head_env, tmp_path):
    """SIGKILL the moment a re-run starts replacing the cache (its manifest goes first): whatever the
    kill interrupted, a reader finds either no cache or a whole one whose shards match the manifest —
    never a partial one; the next run writes it again. (The re-runs cache the labeled rows only.)"""
    run, overrides = teacher_run
    copy = tmp_path / "run"
    for stage in ("teacher", "teacher_cache"):
        shutil.copytree(run / stage, copy / stage)
    mine = [f"run_dir={copy}" if o.startswith("run_dir=") else o for o in overrides]
    mine += ["cache.include_unlabeled=false", "cache.include_eval=false"]
    manifest = copy / "teacher_cache" / MANIFEST_FILE
    proc = subprocess.Popen([sys.executable, "-m", "raykd.cli", "cache", "--config", str(DEMO), *mine], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while manifest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    try:
        ds, found, _ = store.load(copy / "teacher_cache")
        assert ds.count() == found.rows  # the kill came after the new manifest: a whole cache
    except ConfigError as e:
        assert "no teacher cache here" in str(e)
    raykd("cache", "--config", str(DEMO), *mine, env=head_env)
    assert CacheManifest.read(copy / "teacher_cache").rows == 200  # data.train's rows


def test_a_bad_row_in_unlabeled_data_stops_the_cache_job_in_one_line(teacher_run, head_env, tmp_path):
    """Bad UTF-8 on one line passes Ray Data's read and breaks converting its batch for the teacher:
    exit 2, one line naming the file and the line, and no cache written."""
    run, overrides = teacher_run
    lines = [json.dumps(r).encode() + b"\n" for r in generate_split("unlabeled", 300)]
    lines[150] = lines[150].replace(b'"prompt": "', b'"prompt": "\xff', 1)
    bad = tmp_path / "unlabeled.jsonl"
    bad.write_bytes(b"".join(lines))
    mine = [o for o in overrides if not o.startswith(("run_dir=", "data.unlabeled="))]
    proc = raykd("cache", "--config", str(DEMO), *mine, f"run_dir={tmp_path / 'run'}", f"data.unlabeled={bad}",
                 f"cache.teacher={run / 'teacher'}", check=False, timeout=300, env=head_env)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"raykd: error: {bad}: line 151: not UTF-8"), proc.stderr[-3000:]
    assert not (tmp_path / "run" / "teacher_cache" / MANIFEST_FILE).exists()
