import json
from pathlib import Path

import pandas as pd
import pytest

from raykd.builtin.presets import TOKENIZER_DIR
from raykd.config import DataConfig
from raykd.data.datasets import DataError, check_fields, read_dataset, tokenize_batch, tokenized_dataset
from raykd.data.examples import encode_example
from raykd.data.saved_datasets import saved_dataset_files
from raykd.data.tokens import IGNORE_INDEX
from tests.raykd.data.test_chat import TALK

ROWS = [{"prompt": "reverse: fox cat\nanswer:", "completion": " cat fox"}] * 4


def write(path, rows):
    frame = pd.DataFrame(rows)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_formats_read_and_tokenize(local_ray, tmp_path, suffix):
    spec = write(tmp_path / f"train{suffix}", ROWS)
    ds = tokenized_dataset(spec, DataConfig(), "causal_lm", str(TOKENIZER_DIR))
    batch = ds.take_batch(4)
    assert batch["input_ids"].shape == (4, 32)
    labels = batch["labels"][0]
    # prompt tokens are masked, the completion and </s> are learned, padding is masked
    assert labels[0] == IGNORE_INDEX and (labels != IGNORE_INDEX).sum() == 3


def test_text_rows_learn_every_token():
    out = tokenize_batch({"text": ["the red fox."]}, str(TOKENIZER_DIR), DataConfig().__dict__, "causal_lm", "text")
    n = int(out["attention_mask"][0].sum())
    assert (out["labels"][0][1:n] == out["input_ids"][0][1:n]).all()  # <s> is never a target


@pytest.mark.parametrize("batch, kind", [
    ({"prompt": ["a", "b"], "completion": [" x", None]}, "prompt"),  # JSON null
    ({"prompt": ["a", float("nan")], "completion": [" x", " y"]}, "prompt"),  # pandas' empty cell
    ({"prompt": ["a", 42], "completion": [" x", " y"]}, "prompt"),
    ({"prompt": ["a", "b"], "completion": [" x", " "]}, "prompt"),
    ({"text": ["a", None]}, "text"),
])
def test_missing_empty_and_non_text_values_are_refused_not_trained_as_text(batch, kind):
    """Without the file to scan (here: none), the batch's row is named."""
    with pytest.raises(DataError, match=r"my\.jsonl: row 1 of a batch of 2: field '\w+' holds .*; fill or drop"):
        tokenize_batch(batch, str(TOKENIZER_DIR), DataConfig().__dict__, "causal_lm", kind, spec="my.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("rows, labeled, task, message", [
    ([{"prompt": "x"}], True, "causal_lm", "missing field 'completion'"),
    ([{"body": "x"}], False, "causal_lm", "missing field 'messages', 'prompt' or 'text'"),
    ([{"text": "x", "label": 7}], True, "sequence_classification", "outside [0, 2]"),
    ([{"text": "x", "label": -1}], True, "sequence_classification", "outside [0, 2]"),
    ([{"text": "x", "label": "good"}], True, "sequence_classification", "must hold integers"),
    ([{"text": "x"}], True, "sequence_classification", "missing field 'label'"),
])
def test_bad_data_names_file_and_field(local_ray, tmp_path, rows, labeled, task, message):
    spec = write(tmp_path / "data.jsonl", rows)
    with pytest.raises(DataError) as err:
        check_fields(read_dataset(spec), spec, DataConfig(), task, labeled)
    assert spec in str(err.value) and message in str(err.value)


@pytest.mark.slow
def test_missing_empty_and_unreadable_files(local_ray, tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_dataset(str(tmp_path / "nope.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.jsonl"):
        read_dataset(str(empty))
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(DataError, match="broken.jsonl: line 1: not JSON"):
        read_dataset(str(broken))
    not_parquet = tmp_path / "broken.parquet"
    not_parquet.write_bytes(b"PAR1 but no footer")
    with pytest.raises(DataError, match="broken.parquet: cannot read: Parquet magic bytes not found"):
        read_dataset(str(not_parquet))
    with pytest.raises(DataError, match="unknown format"):
        read_dataset(write(tmp_path / "x.txt", ROWS))


@pytest.mark.slow
def test_builtin_splits_and_unknown_split(local_ray):
    assert read_dataset("builtin:test").count() == 300
    with pytest.raises(DataError, match="unknown built-in split"):
        read_dataset("builtin:nope")


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_conversations_read_with_string_or_part_contents_and_learn_their_assistant_turns(local_ray, tmp_path, suffix,
                                                                                       chat_tokenizers):
    """JSONL keeps each conversation as its JSON text (pyarrow's reader refuses a content that is a string
    in one row and a list of parts in the next); Parquet hands lists of structs over as arrays."""
    parts = [dict(m) for m in TALK]
    parts[1]["content"] = [{"type": "text", "text": "what are fox and red?"}]
    rows = [{"messages": TALK, "id": 1}, {"messages": parts, "id": 2}]
    if suffix == ".parquet":  # one content type per Parquet column
        rows = [{"messages": TALK, "id": i} for i in (1, 2)]
    spec = write(tmp_path / f"chat{suffix}", rows)
    tok = chat_tokenizers["qwen2"]
    ds = read_dataset(spec)
    assert check_fields(ds, spec, DataConfig(), "causal_lm", labeled=True) == "messages"
    batch = tokenized_dataset(spec, DataConfig(max_seq_len=96), "causal_lm", tok.name_or_path).take_batch(2)
    ids, labels = encode_example(tok, TALK, 96)
    assert batch["input_ids"][0][: len(ids)].tolist() == ids and batch["labels"][1][: len(labels)].tolist() == labels
    with pytest.raises(DataError, match="missing field 'prompt'"):
        check_fields(ds, spec, DataConfig(format="prompt"), "causal_lm", labeled=True)


def save_to_disk(directory, rows, splits: tuple[str, ...] = ()) -> str:
    """``rows`` written by Hugging Face ``datasets`` (one directory, or a DatasetDict of ``splits``)."""
    import datasets

    data = datasets.Dataset.from_list(rows)
    (datasets.DatasetDict({s: data for s in splits}) if splits else data).save_to_disk(str(directory))
    return str(directory)


def test_a_saved_dataset_lists_its_arrow_files_and_a_dataset_dict_names_its_splits(tmp_path):
    spec = save_to_disk(tmp_path / "one", ROWS)
    assert [Path(f).suffix for f in saved_dataset_files(spec)] == [".arrow"]
    assert saved_dataset_files(str(tmp_path)) is None and saved_dataset_files(write(tmp_path / "a.jsonl", ROWS)) is None
    both = save_to_disk(tmp_path / "both", ROWS, ("train", "test"))
    with pytest.raises(ValueError, match=f"splits train, test: name one, e.g. {both}/train"):
        saved_dataset_files(both)


@pytest.mark.slow
def test_hugging_face_datasets_directories_read_like_any_source(local_ray, tmp_path):
    rows = [{"messages": TALK, "source": "chat"}] * 3
    spec = save_to_disk(tmp_path / "chat", rows)
    ds = read_dataset(spec)
    assert ds.count() == 3 and check_fields(ds, spec, DataConfig(), "causal_lm", labeled=True) == "messages"
    batch = tokenized_dataset(spec, DataConfig(max_seq_len=64), "causal_lm", str(TOKENIZER_DIR)).take_batch(3)
    assert (batch["labels"] != IGNORE_INDEX).sum(axis=1).min() > 0
    both = save_to_disk(tmp_path / "both", ROWS, ("train", "test"))
    with pytest.raises(DataError, match="a datasets DatasetDict with the splits train, test"):
        read_dataset(both)
    assert read_dataset(f"{both}/test").take(1)[0] == ROWS[0]


def test_jsonl_lines_keep_conversations_as_json_text_and_every_field_of_the_batch():
    import pyarrow as pa

    from raykd.data.datasets import _json_lines

    lines = [json.dumps({"messages": TALK[:2], "id": 1}), "",
             json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "note": "n",
                         "completion": ["a"]})]
    rows = _json_lines(pa.table({"text": lines})).to_pylist()
    assert [json.loads(r["messages"]) for r in rows] == [TALK[:2], [{"role": "user", "content": [{"type": "text",
                                                                                                  "text": "hi"}]}]]
    assert rows[0]["note"] is None and rows[1]["id"] is None and rows[1]["completion"] == ["a"]  # lists stay lists
