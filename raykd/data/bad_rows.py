"""Name the first malformed row of a local data file, for an error message a user can act on.

Ray Data reads a file in parallel blocks, so an error raised while parsing or converting a batch knows
neither the file's line nor its row (pyarrow's "in row 150" counts within a block, and Ray's fallback
parser then reports its own, misleading position). Only on that failure path, the file is scanned once,
in order, with the rules the readers apply, and the first row that breaks one is named.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable

from raykd.data.chat import ChatError, conversation

JSON_TYPES = {str: "text", bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}


RowCheck = Callable[[dict], "str | None"]


def first_bad_row(spec: str, text_fields: tuple[str, ...] = (), chat_field: str | None = None,
                  labeled: bool = True) -> str | None:
    """Where and why ``spec`` first breaks a rule, e.g. ``line 151: field 'prompt' holds a number where
    earlier rows hold text``; None if no row does, or ``spec`` is not a local JSONL, CSV or Parquet file.

    Lines (JSONL; CSV: a row's first line, the header is line 1) and rows (Parquet) count from 1.
    Rules: UTF-8; JSONL lines are JSON objects whose fields keep one type (null aside); CSV rows have
    the header's cell count; each of ``text_fields`` holds non-empty text; ``chat_field`` holds a
    conversation (``raykd.data.chat.conversation``; ``labeled``: with an assistant turn).
    """
    if "://" in spec or not os.path.isfile(spec):
        return None
    fields = (*text_fields, *([chat_field] if chat_field else []))

    def problem(row: dict) -> str | None:
        return _text_problem(row, text_fields) or (_chat_problem(row, chat_field, labeled) if chat_field else None)

    if spec.endswith(".jsonl"):
        return _jsonl(spec, problem)
    if spec.endswith(".csv"):
        return _csv(spec, problem)
    if spec.endswith(".parquet"):
        return _parquet(spec, fields, problem)
    return None


def _text_problem(row: dict, fields: tuple[str, ...]) -> str | None:
    for field in fields:
        value = row.get(field)
        if value is None:
            return f"field '{field}' is missing or null"
        if not isinstance(value, str):
            return f"field '{field}' holds {JSON_TYPES.get(type(value), type(value).__name__)}, not text"
        if not value.strip():
            return f"field '{field}' is empty"
    return None


def _chat_problem(row: dict, field: str, labeled: bool) -> str | None:
    if row.get(field) is None:
        return f"field '{field}' is missing or null"
    try:
        conversation(row[field], labeled)
    except ChatError as e:
        return f"field '{field}': {e}"
    return None


def _jsonl(spec: str, problem: RowCheck) -> str | None:
    types: dict[str, type] = {}  # each field's JSON type, from the first row that has a value
    with open(spec, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue  # the readers skip blank lines
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                return f"line {number}: not UTF-8"
            except ValueError as e:
                return f"line {number}: not JSON ({e.msg} column {e.colno})"
            if not isinstance(row, dict):
                return f"line {number}: not a JSON object"
            for key, value in row.items():
                kind = JSON_TYPES.get(type(value), "text") if value is not None else None
                if kind is not None and types.setdefault(key, kind) != kind:
                    return f"line {number}: field '{key}' holds {kind} where earlier rows hold {types[key]}"
            found = problem(row)
            if found:
                return f"line {number}: {found}"
    return None


def _csv(spec: str, problem: RowCheck) -> str | None:
    with open(spec, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return f"line {number}: not UTF-8"
    with open(spec, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        first_line = reader.line_num + 1  # a quoted cell may span lines: name the row's first
        for cells in reader:
            where = f"line {first_line}"
            if len(cells) != len(header):
                return f"{where}: {len(cells)} cells, the header has {len(header)}"
            found = problem(dict(zip(header, cells)))
            if found:
                return f"{where}: {found}"
            first_line = reader.line_num + 1
    return None


def _parquet(spec: str, fields: tuple[str, ...], problem: RowCheck) -> str | None:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(spec)
    except (OSError, ValueError):  # not Parquet at all (pyarrow's ArrowInvalid is a ValueError): the
        return None                # reader's own message says so
    present = [f for f in fields if f in file.schema_arrow.names]
    seen = 0
    for batch in file.iter_batches(columns=present, batch_size=4096):
        for i, row in enumerate(batch.to_pylist(), seen + 1):
            found = problem(row)
            if found:
                return f"row {i}: {found}"
        seen += batch.num_rows
    return None
