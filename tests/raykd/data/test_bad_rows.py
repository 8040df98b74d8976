"""Generated malformed rows in JSONL, CSV and Parquet files: the scan names the right line or row and
the fault, and through Ray Data every stage's reader turns it into one DataError line naming the file."""

import csv
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raykd.builtin.presets import TOKENIZER_DIR
from raykd.config import DataConfig, user_error
from raykd.data.bad_rows import first_bad_row
from raykd.data.datasets import DataError, conversation_column, tokenized_dataset

FIELDS = ("prompt", "completion")
WORDS = ["fox", "cat", "é", "日本", "a,b", 'say "hi"', "two\nlines", "tab\there", "🦊", "{", "}", "[1]", "null"]
FAULTS = {  # format -> fault -> what the scan must say
    "jsonl": {"not_json": "not JSON", "not_object": "not a JSON object", "number": "holds a number where",
              "list": "holds a list where", "null": "field 'completion' is missing or null",
              "absent": "field 'completion' is missing or null", "empty": "field 'prompt' is empty",
              "blank_text": "field 'completion' is empty", "utf8": "not UTF-8"},
    "csv": {"extra_cell": "3 cells, the header has 2", "short_row": "1 cells, the header has 2",
            "empty": "field 'completion' is empty", "utf8": "not UTF-8"},
    "parquet": {"null": "field 'prompt' is missing or null", "empty": "field 'completion' is empty"},
}


def good_row(rng: random.Random) -> dict:
    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
    return {"prompt": text(), "completion": text()}


def jsonl_line(row: dict, fault: str | None, rng: random.Random) -> bytes:
    line = json.dumps(row, ensure_ascii=rng.random() < 0.5)
    if fault == "not_json":
        line = line[: rng.randint(1, len(line) - 2)]  # cut before the closing brace
    elif fault == "not_object":
        line = json.dumps(rng.choice([[1, 2], "text", 7, None, [row]]))
    elif fault in ("number", "list"):
        line = json.dumps(row | {"prompt": rng.randint(-9, 10**12) if fault == "number" else ["a", "b"]})
    elif fault == "null":
        line = json.dumps(row | {"completion": None})
    elif fault == "absent":
        line = json.dumps({"prompt": row["prompt"]})
    elif fault in ("empty", "blank_text"):
        line = json.dumps(row | ({"prompt": ""} if fault == "empty" else {"completion": " \t "}))
    data = line.encode() + b"\n"
    return data.replace(b'"prompt": "', b'"prompt": "\xff\xfe', 1) if fault == "utf8" else data


def write_case(directory: Path, fmt: str, fault: str, rng: random.Random) -> tuple[str, str]:
    """A file of good rows with one bad one; returns (its path, where the scan must point)."""
    rows = [good_row(rng) for _ in range(rng.randint(2, 200))]
    bad = rng.randrange(1 if fmt == "jsonl" and fault in ("number", "list") else 0, len(rows))
    path = directory / f"{fmt}-{fault}.{fmt}"
    if fmt == "jsonl":
        path.write_bytes(b"".join(jsonl_line(r, fault if i == bad else None, rng) for i, r in enumerate(rows)))
        return str(path), f"line {bad + 1}: "
    if fmt == "csv":
        out, line = io.StringIO(), 2  # the header is line 1
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELDS)
        for i, r in enumerate(rows):
            cells = [r["prompt"], r["completion"]]
            if i == bad:
                where = line
                cells = {"extra_cell": cells + ["x"], "short_row": cells[:1], "empty": [cells[0], ""]}.get(fault, cells)
            record = io.StringIO()
            csv.writer(record, lineterminator="\n").writerow(cells)
            out.write(record.getvalue())
            line += record.getvalue().count("\n")
        data = out.getvalue().encode()
        if fault == "utf8":  # a bad byte in the bad row's first line
            lines = data.split(b"\n")
            lines[where - 1] = b"\xc3" + lines[where - 1]
            data = b"\n".join(lines)
        path.write_bytes(data)
        return str(path), f"line {where}: "
    values = {f: [r[f] for r in rows] for f in FIELDS}
    if fault in FAULTS["parquet"]:
        values["prompt" if fault == "null" else "completion"][bad] = None if fault == "null" else ""
    pq.write_table(pa.table(values), path)
    return str(path), f"row {bad + 1}: "


def test_the_scan_names_the_first_bad_line_or_row_of_300_generated_files(tmp_path):
    rng = random.Random(16)
    cases = [(fmt, fault) for fmt, faults in FAULTS.items() for fault in faults]
    for n in range(300):
        fmt, fault = cases[n % len(cases)]
        spec, where = write_case(tmp_path, fmt, fault, rng)
        found = first_bad_row(spec, FIELDS)
        assert found is not None and found.startswith(where) and FAULTS[fmt][fault] in found, (n, spec, where, found)
    print(f"300 generated files, {len(cases)} kinds of fault: each named at its line or row")


def test_files_of_good_rows_have_no_bad_row(tmp_path):
    rng = random.Random(7)
    for fmt in FAULTS:
        spec, _ = write_case(tmp_path, fmt, "none", rng)
        assert first_bad_row(spec, FIELDS) is None, spec


@pytest.mark.slow
@pytest.mark.parametrize("fmt, fault", [("jsonl", "not_json"), ("jsonl", "number"), ("jsonl", "null"),
                                        ("jsonl", "utf8"), ("csv", "extra_cell"), ("csv", "empty"),
                                        ("parquet", "null")])
def test_ray_data_readers_refuse_a_bad_row_in_one_line_naming_file_and_line(local_ray, monkeypatch, tmp_path, fmt,
                                                                           fault):
    """Parse errors (at read), type changes, nulls and empty cells (in the tokenizing map, inside Ray
    Data) and bad UTF-8 (converting a batch) all reach the caller as one DataError line."""
    # as every stage's Ray has it (raykd.launch.init_ray): a map's own error, not Ray Data's wrapper
    monkeypatch.setattr(local_ray.data.DataContext.get_current(), "raise_original_map_exception", True)
    spec, where = write_case(tmp_path, fmt, fault, random.Random(fmt + fault))
    with pytest.raises(Exception) as caught:
        tokenized_dataset(spec, DataConfig(), "causal_lm", str(TOKENIZER_DIR))
    error = user_error(caught.value)
    assert isinstance(error, DataError), caught.value
    message = str(error).splitlines()[0]  # what `raykd.launch.fail` prints (Ray appends retry hints below it)
    assert message.startswith(f"{spec}: {where}") and FAULTS[fmt][fault] in message


CHAT_FAULTS = {  # a broken conversation and what its line says
    "no_role": ([{"content": "hi"}], "role None is not one of"),
    "no_content": ([{"role": "user"}], "content must be a string or a list of text parts"),
    "unknown_role": ([{"role": "wizard", "content": "hi"}], "role 'wizard' is not one of"),
    "number_content": ([{"role": "user", "content": 7}], "content must be a string or a list of text parts"),
    "image_part": ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
                   "content parts must be"),
    "empty": ([], "a conversation must be a non-empty list"),
    "not_a_list": ("hello", ""),  # first row: not a conversation; later: text where earlier rows hold a list
    "unanswered": ([{"role": "user", "content": "hi"}], "no assistant turn to learn from"),
}


def chat_row(rng: random.Random) -> dict:
    """A good conversation; content a string or a list of text parts, as OpenAI allows either."""
    def content(text):
        return [{"type": "text", "text": w} for w in text.split(" ", 1)] if rng.random() < 0.5 else text
    turns = [{"role": "system", "content": content("be brief")}] * (rng.random() < 0.5)
    for _ in range(rng.randint(1, 3)):
        turns += [{"role": "user", "content": content("what is a fox?")},
                  {"role": "assistant", "content": content("an animal")}]
    return {"messages": turns}


def test_a_bad_conversation_is_one_line_naming_file_line_and_problem(tmp_path):
    """Generated files, each with one broken conversation among good ones: the batch that meets it
    names the file's line (JSONL) and the problem; an unlabeled source may end before the answer."""
    rng = random.Random(34)
    for n in range(80):
        fault = list(CHAT_FAULTS)[n % len(CHAT_FAULTS)]
        rows = [chat_row(rng) for _ in range(rng.randint(2, 30))]
        bad = rng.randrange(len(rows))
        rows[bad] = {"messages": CHAT_FAULTS[fault][0]}
        spec = tmp_path / f"chat-{n}.jsonl"
        spec.write_text("".join(json.dumps(r) + "\n" for r in rows))
        batch = {"messages": [json.dumps(r["messages"]) for r in rows]}  # as the JSONL reader keeps them
        with pytest.raises(DataError) as caught:
            conversation_column(batch, "messages", str(spec), labeled=True)
        assert str(caught.value).startswith(f"{spec}: line {bad + 1}: field 'messages'"), (fault, caught.value)
        assert CHAT_FAULTS[fault][1] in str(caught.value) and str(caught.value).endswith("; fix or drop such rows")
    unlabeled = {"messages": [json.dumps(CHAT_FAULTS["unanswered"][0])]}
    assert conversation_column(unlabeled, "messages", "u.jsonl", labeled=False)[0][-1]["role"] == "user"
