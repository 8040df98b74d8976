"""Row counts of the configured data, where counting is cheap (built-in splits, local files), for sizing."""

from __future__ import annotations

import json
import os

from raykd.config import RaykdConfig
from raykd.data.saved_datasets import saved_dataset_files


def count_rows(spec: str) -> int | None:
    """Rows of ``builtin:SPLIT`` or a local JSONL / JSON / CSV / Parquet file, Parquet directory or Hugging
    Face ``datasets`` directory, without Ray; None for a URI or anything else that would need reading
    remote data (or a DatasetDict directory, whose split the user must name)."""
    if spec.startswith("builtin:"):
        from raykd.builtin.data import SPLITS, generate_split

        name = spec.split(":", 1)[1]
        return len(generate_split(name)) if name in SPLITS else None
    if "://" in spec or not os.path.exists(spec):
        return None
    try:
        saved = saved_dataset_files(spec)
    except ValueError:
        return None
    if saved is not None:
        import pyarrow.ipc

        return sum(batch.num_rows for path in saved for batch in pyarrow.ipc.open_stream(path))
    if os.path.isdir(spec) or spec.endswith(".parquet"):
        import pyarrow.parquet as pq

        return sum(fragment.count_rows() for fragment in pq.ParquetDataset(spec).fragments)  # footers only
    with open(spec, encoding="utf-8") as f:
        if spec.endswith(".json") and f.read(1) == "[":  # a JSON array rather than JSON lines
            f.seek(0)
            return len(json.load(f))
        f.seek(0)
        lines = sum(1 for line in f if line.strip())
    return lines - 1 if spec.endswith(".csv") else lines  # a CSV's first line is its header


def cache_rows(cfg: RaykdConfig, assumed: int) -> tuple[int, int, list[str]]:
    """(rows to train on, held-out rows) of the teacher cache (raykd/cache/scorer.py: data.train and/or
    data.unlabeled, and the first data.eval_examples of data.eval), with ``assumed`` rows for each
    training source that cannot be counted cheaply (the notes name them)."""
    notes, d, c = [], cfg.data, cfg.cache

    def rows(spec: str) -> int:
        n = count_rows(spec)
        if n is None:
            notes.append(f"{spec}: not counted (remote or unreadable here); assumed {assumed} rows (--rows)")
            return assumed
        return n

    train = (rows(d.train) if c.include_train else 0) + (rows(d.unlabeled) if c.include_unlabeled else 0)
    # held out: the first data.eval_examples rows, or all of a smaller (counted) eval set
    held_out = min(count_rows(d.eval) or d.eval_examples, d.eval_examples) if c.include_eval and d.eval else 0
    return train, held_out, notes
