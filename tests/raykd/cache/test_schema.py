"""The cache schema's checks: a cache made by another teacher or with another tokenizer is refused."""

import json
import shutil
from pathlib import Path

import pytest

from raykd.cache.schema import CacheManifest, CacheMismatchError, check_compatible

pytestmark = pytest.mark.slow


def edited_teacher(run: Path, target: Path, file: str, edit) -> Path:
    """A copy of the run's teacher directory with ``edit(data)`` applied to its JSON ``file``."""
    shutil.copytree(run / "teacher", target)
    data = json.loads((target / file).read_text())
    edit(data)
    (target / file).write_text(json.dumps(data))
    return target


def swap_two_ids(tokenizer: dict) -> None:
    vocab = tokenizer["model"]["vocab"]  # the same words, other ids
    a, b = sorted(vocab)[-2:]
    vocab[a], vocab[b] = vocab[b], vocab[a]


def test_a_cache_from_another_teacher_is_refused(teacher_run, tmp_path):
    run, _ = teacher_run
    manifest = CacheManifest.read(run / "teacher_cache")
    other = edited_teacher(run, tmp_path / "other", "config.json", lambda c: c.update(rms_norm_eps=1e-5))
    with pytest.raises(CacheMismatchError, match="another teacher"):
        check_compatible(manifest, str(other), str(other), run / "teacher_cache")
    check_compatible(manifest, str(run / "teacher"), str(run / "teacher"), run / "teacher_cache")


def test_a_cache_made_with_another_tokenizer_is_refused(teacher_run, tmp_path):
    run, _ = teacher_run
    manifest = CacheManifest.read(run / "teacher_cache")
    other = edited_teacher(run, tmp_path / "other", "tokenizer.json", swap_two_ids)
    with pytest.raises(CacheMismatchError, match="another tokenizer"):
        check_compatible(manifest, str(run / "teacher"), str(other), run / "teacher_cache")
