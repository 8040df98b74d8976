"""Datasets through Ray Data: built-in splits, JSONL, Parquet and CSV (local paths or pyarrow URIs), and
Hugging Face ``datasets`` directories (``save_to_disk``).

Causal LM rows hold ``text``, ``prompt`` + ``completion`` (loss on the completion only), or
``messages``: a conversation in the OpenAI format (loss on assistant turns, ``raykd.data.chat``).
Sequence classification rows hold ``text`` + an integer ``label`` in ``[0, num_labels)``.
Field names come from ``DataConfig``. Bad data fails early with a ``DataError`` naming the file
and the field, before any training starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import ray
import ray.data
from ray.data.datasource import FileBasedDatasource

from raykd.builtin.data import SPLITS, generate_split
from raykd.config import ConfigError, DataConfig, user_error
from raykd.data.bad_rows import first_bad_row
from raykd.data.chat import ChatError, conversation
from raykd.data.examples import encode_lm_batch, pad_rows
from raykd.data.saved_datasets import saved_dataset_files
from raykd.data.tokens import classification_ids, load_tokenizer

ROWS_PER_BUILTIN_BLOCK = 500
READERS = {".jsonl": "read_json", ".json": "read_json", ".parquet": "read_parquet", ".csv": "read_csv"}


class DataError(ConfigError):
    """Bad input data: the message names the file and the field."""


def _is_conversation(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)


def _has_conversations(spec: str) -> bool:
    """Whether a local JSONL file's first row holds a list of objects (a conversation)."""
    if "://" in spec or not spec.endswith((".jsonl", ".json")) or not os.path.isfile(spec):
        return False
    with open(spec, "rb") as f:
        line = next((raw for raw in f if raw.strip()), b"")
    try:
        row = json.loads(line)
    except ValueError:
        return False  # the reader names the bad line
    return isinstance(row, dict) and any(_is_conversation(v) for v in row.values())


def _json_lines(batch: pa.Table) -> pa.Table:
    """Ray Data batch fn over ``read_text`` lines: JSON objects, a conversation (a list of objects) kept
    as its JSON text. pyarrow's JSON reader needs one type per nested field, and a message's content may
    be a string in one row and a list of text parts in the next. Every field of the batch's rows is a
    column (rows without it hold null)."""
    rows = [json.loads(line) for line in batch.column("text").to_pylist() if line.strip()]
    columns = dict.fromkeys(key for row in rows for key in row)
    return pa.table({key: [json.dumps(v) if _is_conversation(v := row.get(key)) else v for row in rows]
                     for key in columns})


def read_json_lines(spec: str) -> ray.data.Dataset:
    """A JSONL file of conversations, read line by line (``_json_lines``)."""
    return ray.data.read_text(spec).map_batches(_json_lines, batch_format="pyarrow")


class ArrowStreamDatasource(FileBasedDatasource):
    """Arrow IPC stream files (a ``save_to_disk`` directory's), one block per record batch: Ray Data reads
    the Arrow file format only."""

    _FILE_EXTENSIONS = ["arrow"]

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        for batch in pyarrow.ipc.open_stream(f):
            yield pa.Table.from_batches([batch])


def _reader(spec: str):
    if _has_conversations(spec):
        return read_json_lines
    try:
        saved = saved_dataset_files(spec)
    except ValueError as e:
        raise DataError(f"{spec}: {e}") from None
    if saved is not None:
        return lambda _: ray.data.read_datasource(ArrowStreamDatasource(saved))
    suffix = next((s for s in READERS if spec.rstrip("/").endswith(s)), None)
    if suffix is None:
        if "://" not in spec and os.path.isdir(spec):
            return ray.data.read_parquet  # a directory of shards, as our own jobs write
        raise DataError(f"{spec}: unknown format; use .jsonl, .json, .parquet or .csv, a Parquet directory or a "
                        "Hugging Face datasets directory (save_to_disk)")
    return getattr(ray.data, READERS[suffix])


def read_dataset(spec: str) -> ray.data.Dataset:
    """A dataset from ``builtin:SPLIT`` or a file / directory / URI; raises DataError if unreadable or empty."""
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in SPLITS:
            raise DataError(f"{spec}: unknown built-in split; choose one of {', '.join(SPLITS)}")
        rows = generate_split(name)
        # Ray's default is one block per row up to 200: hundreds of tiny tasks per pass over a small split.
        return ray.data.from_items(rows, override_num_blocks=-(-len(rows) // ROWS_PER_BUILTIN_BLOCK))
    if "://" not in spec and not os.path.exists(spec):
        raise DataError(f"{spec}: file not found")
    try:
        with bad_rows_named([spec]):
            ds = _reader(spec)(spec)
            empty = ds.count() == 0
    except DataError:
        raise
    except Exception as e:  # unreadable, and no row of a local file to blame: the parser's own words
        raise DataError(f"{spec}: cannot read: {innermost_message(e)[:200]}") from None
    if empty:
        raise DataError(f"{spec}: no rows")
    return ds


def innermost_message(error: BaseException) -> str:
    """The first line of the deepest cause of ``error`` without terminal colours: Ray wraps a reader's
    error in task errors whose own first line names only the task."""
    while isinstance(getattr(error, "cause", None), BaseException) or error.__cause__ is not None:
        cause = getattr(error, "cause", None)
        error = cause if isinstance(cause, BaseException) else error.__cause__
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def bad_rows_named(specs: list[str]) -> Iterator[None]:
    """Turn a failure of Ray Data work on ``specs`` (parsing, converting) into a DataError naming the first
    malformed row of a local file among them (``raykd.data.bad_rows``); any other failure passes unchanged."""
    try:
        yield
    except Exception as e:
        if isinstance(e, DataError) or user_error(e) is not None:
            raise
        for spec in specs:
            where = first_bad_row(spec)
            if where is not None:
                raise DataError(f"{spec}: {where}") from None
        raise


def _require(spec: str, names: list[str], fields: list[str]) -> None:
    for f in fields:
        if f not in names:
            raise DataError(f"{spec}: missing field '{f}' (fields present: {', '.join(names)})")


def check_fields(ds: ray.data.Dataset, spec: str, cfg: DataConfig, task: str, labeled: bool) -> str:
    """Check a dataset's fields for the task; return its kind: 'messages', 'prompt', 'text' or
    'classification' (``data.format``, or with ``auto`` the first of those fields present)."""
    schema = ds.schema()
    names = list(schema.names)
    if task == "sequence_classification":
        _require(spec, names, [cfg.text_field] + ([cfg.label_field] if labeled else []))
        _require_text(spec, schema, [cfg.text_field])
        if labeled:
            _check_labels(ds, spec, cfg, schema.types[names.index(cfg.label_field)])
        return "classification"
    kind = cfg.format
    if kind == "auto":
        present = {"messages": cfg.messages_field, "prompt": cfg.prompt_field, "text": cfg.text_field}
        kind = next((k for k, f in present.items() if f in names), None)
        if kind is None:
            raise DataError(f"{spec}: missing field '{cfg.messages_field}', '{cfg.prompt_field}' or "
                            f"'{cfg.text_field}' (fields present: {', '.join(names)})")
    if kind == "messages":
        _require(spec, names, [cfg.messages_field])
    elif kind == "prompt":
        _require(spec, names, [cfg.prompt_field] + [cfg.completion_field] * labeled)
        _require_text(spec, schema, [cfg.prompt_field] + [cfg.completion_field] * labeled)
    else:
        _require(spec, names, [cfg.text_field])
        _require_text(spec, schema, [cfg.text_field])
    return kind


def _require_text(spec: str, schema, fields: list[str]) -> None:
    """Each of ``fields`` is a text column (or all-null so far, which ``text_column`` refuses by row)."""
    for field in fields:
        arrow_type = schema.types[schema.names.index(field)]
        if arrow_type is not None and not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
                                           or pa.types.is_null(arrow_type)):
            where = first_bad_row(spec, (field,))
            raise DataError(f"{spec}: field '{field}' must hold text, found {arrow_type}"
                            + (f" (first: {where})" if where else ""))


def _check_labels(ds: ray.data.Dataset, spec: str, cfg: DataConfig, arrow_type) -> None:
    if arrow_type is not None and not pa.types.is_integer(arrow_type):
        raise DataError(f"{spec}: field '{cfg.label_field}' must hold integers, found {arrow_type}")
    low, high = ds.min(cfg.label_field), ds.max(cfg.label_field)
    if low is None or low < 0 or high >= cfg.num_labels:
        raise DataError(f"{spec}: field '{cfg.label_field}' has values in [{low}, {high}], "
                        f"outside [0, {cfg.num_labels - 1}] (data.num_labels={cfg.num_labels})")


def text_column(batch: dict, field: str, spec: str) -> np.ndarray:
    """``batch[field]`` as strings. A missing (JSON null, absent), empty or non-text value is a DataError
    naming the file's row (``raykd.data.bad_rows``), not the text "None", "nan" or "42" quietly trained on."""
    values = batch[field]
    bad = [not isinstance(v, str) or not v.strip() for v in values]
    if any(bad):
        first = values[bad.index(True)]
        where = first_bad_row(spec, (field,)) or (f"row {bad.index(True)} of a batch of {len(values)}: field "
                                                  f"'{field}' holds {first!r}")
        raise DataError(f"{spec}: {where}; fill or drop such rows")
    return np.asarray(values).astype(str)


def conversation_column(batch: dict, field: str, spec: str, labeled: bool) -> list[list[dict]]:
    """``batch[field]`` as checked conversations (``raykd.data.chat.conversation``); a malformed one is a
    DataError naming the file's row."""
    out = []
    for i, value in enumerate(batch[field]):
        try:
            out.append(conversation(value, labeled))
        except ChatError as e:
            where = (first_bad_row(spec, chat_field=field, labeled=labeled)
                     or f"row {i} of a batch of {len(batch[field])}: field '{field}': {e}")
            raise DataError(f"{spec}: {where}; fix or drop such rows") from None
    return out


def encode_classification_batch(tokenizer, texts, width: int) -> dict[str, np.ndarray]:
    """Texts → right-padded ``input_ids`` (framed as ``raykd.data.tokens`` says) and ``attention_mask``,
    each ``(rows, width)``."""
    encoded = [classification_ids(tokenizer, t, width) for t in texts]
    return {"input_ids": pad_rows(encoded, tokenizer.pad_token_id, width),
            "attention_mask": pad_rows([[1] * len(e) for e in encoded], 0, width)}


def tokenize_batch(batch: dict, tokenizer_path: str, cfg: dict, task: str, kind: str,
                   trust_remote_code: bool = False, spec: str = "data", labeled: bool = True) -> dict:
    """Ray Data batch fn: rows → right-padded ``input_ids``, ``attention_mask``, ``labels``.

    Returns arrays of shape ``(rows, max_seq_len)`` (``labels`` is ``(rows,)`` for classification).
    A conversation keeps its turns as they are (``raykd.data.examples.encode_example``).
    """
    data = DataConfig(**cfg)
    tok = load_tokenizer(tokenizer_path, trust_remote_code)
    width = data.max_seq_len
    if kind == "classification":
        out = encode_classification_batch(tok, text_column(batch, data.text_field, spec), width)
        if data.label_field in batch:
            out["labels"] = np.asarray(batch[data.label_field], dtype=np.int64)
        return out
    if kind == "messages":
        chats = conversation_column(batch, data.messages_field, spec, labeled)
        try:
            return encode_lm_batch(tok, chats, width, data.train_on)
        except ChatError as e:  # the template refuses one
            raise DataError(f"{spec}: {e}") from None
    if kind == "prompt":
        prompts = text_column(batch, data.prompt_field, spec)
        if data.completion_field in batch:
            pairs = list(zip(prompts, text_column(batch, data.completion_field, spec)))
        else:
            pairs = [(p, None) for p in prompts]
    else:
        pairs = [("", t) for t in text_column(batch, data.text_field, spec)]
    return encode_lm_batch(tok, pairs, width)


def first_rows(ds: ray.data.Dataset, rows: int) -> ray.data.Dataset:
    """The first ``rows`` rows of ``ds`` (``data.train_rows``, ``data.unlabeled_rows``); 0 keeps them all."""
    return ds.limit(rows) if rows else ds


def tokenized_dataset(spec: str, cfg: DataConfig, task: str, tokenizer_path: str, labeled: bool = True,
                      trust_remote_code: bool = False, rows: int = 0) -> ray.data.Dataset:
    """Read, check and tokenize a dataset (its first ``rows`` rows, 0 = all); materialised so that every
    epoch reuses it."""
    ds = read_dataset(spec)
    kind = check_fields(ds, spec, cfg, task, labeled)
    ds = first_rows(ds, rows)
    with bad_rows_named([spec]):
        return ds.map_batches(
            tokenize_batch, batch_format="numpy", batch_size=256,
            fn_kwargs={"tokenizer_path": tokenizer_path, "cfg": dataclasses.asdict(cfg), "task": task, "kind": kind,
                       "trust_remote_code": trust_remote_code, "spec": spec, "labeled": labeled},
        ).materialize()


def held_out_rows(spec: str, cfg: DataConfig, task: str) -> tuple[list[dict], str]:
    """Up to ``cfg.eval_examples`` labeled rows of ``spec`` (eval or test split), checked, and their kind."""
    ds = read_dataset(spec)
    kind = check_fields(ds, spec, cfg, task, labeled=True)
    with bad_rows_named([spec]):
        rows = ds.take(cfg.eval_examples)
    if kind == "messages":  # scored in other processes: a broken conversation is named here, by its line
        conversation_column({cfg.messages_field: [r.get(cfg.messages_field) for r in rows]}, cfg.messages_field,
                            spec, labeled=True)
    return rows, kind
