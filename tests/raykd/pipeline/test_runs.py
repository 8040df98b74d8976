"""Run identity: what changes a run's fingerprint, and what does not."""

from __future__ import annotations

import os

from raykd.builtin.presets import TOKENIZER_DIR
from raykd.config import load_config
from raykd.pipeline.runs import common_inputs, fingerprint, run_name, source_identity, stage_knobs


def finetune_print(overrides: list[str]) -> str:
    cfg = load_config(None, overrides)
    return fingerprint(common_inputs(cfg, str(TOKENIZER_DIR)) | {"knobs": stage_knobs(cfg.finetune)})


def test_knobs_that_change_the_result_change_the_fingerprint():
    base = finetune_print([])
    assert finetune_print(["finetune.lr=0.01"]) != base and finetune_print(["seed=1"]) != base
    assert finetune_print(["data.max_seq_len=64"]) != base
    assert finetune_print(["finetune.workers=2", "finetune.sharding=ddp"]) != base  # twice the global batch
    # how a run is executed or reported, and what is scored after it, leave it alone
    assert finetune_print(["finetune.log_every=3", "finetune.checkpoint_every=7", "finetune.max_failures=0",
                           "finetune.cpus_per_worker=0.5", "data.eval_examples=5", "data.test=x.jsonl"]) == base
    # the same global batch split another way is the same run: it resumes on another world size
    assert finetune_print(["finetune.workers=2", "finetune.sharding=fsdp", "finetune.batch_size=8"]) == base
    assert finetune_print(["finetune.batch_size=4", "finetune.grad_accum=4"]) == base


def test_a_data_file_is_identified_by_its_content_stamp(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a"}\n')
    before = source_identity(str(data))
    data.write_text('{"text": "a b"}\n')
    os.utime(data, ns=(1, 1))
    assert source_identity(str(data)) != before
    assert source_identity("builtin:train") == source_identity("builtin:train") != source_identity("builtin:eval")


def test_a_run_with_other_inputs_says_it_starts_afresh(tmp_path, capsys):
    first = run_name("distill-student", {"alpha": 0.5}, tmp_path, "distill")
    assert run_name("distill-student", {"alpha": 0.5}, tmp_path, "distill") == first
    assert "afresh" not in capsys.readouterr().out
    second = run_name("distill-student", {"alpha": 0.9}, tmp_path, "distill")
    assert second != first and f"earlier run(s) {first}" in capsys.readouterr().out
    assert (tmp_path / second / "fingerprint.json").read_text().count("0.9") == 1
