"""Content hashes of model and tokenizer directories: what tells one teacher from another.

A model is named by a SHA-256 over the full content of its config and weight files. Two LoRA
fine-tunes of one base have the same file sizes and often the same first and last MiB (the adapters
touch only the attention projections in between), so nothing short of the whole content will do.

Hashing reads every byte of the weights, so it is done once per directory content and recorded:

- the fine-tune job hashes what it exported and writes ``HASH_FILE`` into the model directory;
- any other directory (a teacher raykd did not make, a base model) is hashed on first use and
  recorded in ``RUN/MEMO_FILE``, beside the cache.

A record holds the name, size and modification time of every file it covers and is used only while
they all still match; a model written again in the same place is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

HASH_FILE = "raykd_hash.json"
MEMO_FILE = "model_hashes.json"
MODEL_FILES = ("config.json", "*.safetensors", "*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt")
_CHUNK = 16 << 20


def _files(directory: str, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({p for pattern in patterns for p in Path(directory).glob(pattern) if p.is_file()})


def _stats(files: list[Path]) -> list[list]:
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def content_hash(files: list[Path]) -> str:
    """SHA-256 (first 16 hex digits) over each file's name and full content, streamed."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{path.stat().st_size}\n".encode())
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def tokenizer_hash(tokenizer_dir: str) -> str:
    """Tokenizer files are small: hashed in full every time."""
    return content_hash(_files(tokenizer_dir, TOKENIZER_FILES))


def record_model_hash(model_dir: str) -> str:
    """Hash a model directory just written (the fine-tune export) and record it inside it."""
    files = _files(model_dir, MODEL_FILES)
    digest = content_hash(files)
    _write_json(Path(model_dir) / HASH_FILE, {"hash": digest, "files": _stats(files)})
    return digest


def model_hash(model_dir: str, memo_dir: str | Path | None = None) -> str:
    """The content hash of a model directory: from its own record or ``memo_dir/MEMO_FILE`` while the
    files are unchanged, else computed (and recorded in the memo when ``memo_dir`` is given)."""
    files = _files(model_dir, MODEL_FILES)
    stats, key = _stats(files), str(Path(model_dir).resolve())
    own = _read_json(Path(model_dir) / HASH_FILE)
    memo = _read_json(Path(memo_dir) / MEMO_FILE) if memo_dir else {}
    for record in (own, memo.get(key, {})):
        if record.get("files") == stats:
            return record["hash"]
    started, size = time.time(), sum(s[1] for s in stats)
    digest = content_hash(files)
    if size > 1 << 30:
        print(f"[raykd] hashed {model_dir} ({size / 2**30:.1f} GiB) in {time.time() - started:.0f}s", flush=True)
    if memo_dir:
        memo = _read_json(Path(memo_dir) / MEMO_FILE)  # re-read: another process may have added entries
        _write_json(Path(memo_dir) / MEMO_FILE, memo | {key: {"hash": digest, "files": stats}})
    return digest


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    """Atomically (workers and jobs may read it meanwhile); a read-only place is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass
