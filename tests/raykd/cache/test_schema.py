"""The cache schema's checks: a cache made by another teacher or with another tokenizer is refused."""

import json
import shutil

import pytest

from raykd.cache.schema import CacheManifest, CacheMismatchError, check_compatible


def test_a_cache_from_another_teacher_is_refused(teacher_run, tmp_path):
    run, _ = teacher_run
    manifest = CacheManifest.read(run / "teacher_cache")
    other = tmp_path / "other_teacher"
    shutil.copytree(run / "teacher", other)
    config = json.loads((other / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(CacheMismatchError, match="another teacher"):
        check_compatible(manifest, str(other), str(other), run / "teacher_cache")
    check_compatible(manifest, str(run / "teacher"), str(run / "teacher"), run / "teacher_cache")


def test_a_cache_made_with_another_tokenizer_is_refused(teacher_run, tmp_path):
    run, _ = teacher_run
    manifest = CacheManifest.read(run / "teacher_cache")
    other = tmp_path / "other_tokenizer"
    shutil.copytree(run / "teacher", other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]  # two tokens swap ids: the same words, other ids
    a, b = sorted(vocab)[-2:]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(CacheMismatchError, match="another tokenizer"):
        check_compatible(manifest, str(run / "teacher"), str(other), run / "teacher_cache")
