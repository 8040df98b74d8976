"""Which pipeline stages count as done: config reads, upstream outputs, result files."""

from __future__ import annotations

import json

import pytest

from raykd.config import load_config
from raykd.pipeline.state import (
    ORDER,
    STAGES,
    config_reads,
    forced,
    output_dir,
    stage_fingerprint,
    stage_status,
    write_record,
)


def config(run_dir, *overrides: str):
    return load_config(None, [f"run_dir={run_dir}", *overrides])


def prints(run_dir, *overrides: str) -> dict[str, str]:
    cfg = config(run_dir, *overrides)
    return {stage: stage_fingerprint(cfg, stage) for stage in ORDER}


def finish(cfg, stage: str, content: dict) -> None:
    """What a stage leaves: its needed files, then its result file; then the pipeline's record."""
    out = output_dir(cfg, stage)
    out.mkdir(parents=True, exist_ok=True)
    for name in STAGES[stage].needs:
        (out / name).write_text("{}")
    (out / STAGES[stage].result_file).write_text(json.dumps(content))
    write_record(cfg, stage, 1.0)


def test_a_stage_reads_its_own_section_and_not_the_others():
    cfg = load_config(None)
    reads = config_reads(cfg, STAGES["finetune"].reads)
    assert "finetune.lr" in reads and "data.train" in reads and "models.teacher" in reads
    assert not {"models.student", "data.unlabeled", "data.test", "finetune.log_every", "finetune.run_name"} & set(reads)
    assert not any(k.startswith(("distill.", "serve.", "cache.")) for k in reads)


@pytest.mark.parametrize("override, changed", [
    ("distill.alpha=0.7", {"distill", "evaluate", "tune"}),
    ("serve.compare_requests=8", {"compare"}),
    ("serve.port=8100", set()),
    ("cache.top_k=8", {"cache"}),
    ("finetune.lr=0.01", {"finetune"}),
    ("tune.num_samples=2", {"tune"}),
    ("data.unlabeled=builtin:eval", {"cache", "distill", "evaluate", "tune"}),
    ("finetune.log_every=3", set()),
])
def test_a_config_change_redoes_exactly_the_stages_that_read_it(tmp_path, override, changed):
    base, now = prints(tmp_path), prints(tmp_path, override)
    assert {s for s in ORDER if base[s] != now[s]} == changed


def test_a_new_upstream_output_redoes_what_reads_it(tmp_path):
    cfg = config(tmp_path)
    finish(cfg, "finetune", {"eval_score": 0.4})
    before = prints(tmp_path)
    (output_dir(cfg, "finetune") / "metrics.json").write_text(json.dumps({"eval_score": 0.5}))  # `raykd finetune` again
    after = prints(tmp_path)
    assert {s for s in ORDER if before[s] != after[s]} == {"cache", "evaluate", "compare"}


def test_status_follows_the_record_the_outputs_and_the_config(tmp_path):
    cfg = config(tmp_path)
    assert stage_status(cfg, "distill") == (False, "not run yet")
    finish(cfg, "distill", {"eval_score": 0.4})
    assert stage_status(cfg, "distill")[0]
    assert not stage_status(config(tmp_path, "distill.alpha=0.9"), "distill")[0]
    assert stage_status(config(tmp_path, "distill.log_every=1"), "distill")[0]
    (output_dir(cfg, "distill") / "config.json").unlink()
    assert stage_status(cfg, "distill") == (False, f"{output_dir(cfg, 'distill')} lacks config.json")
    finish(cfg, "distill", {"eval_score": 0.4})
    (output_dir(cfg, "distill") / "metrics.json").write_text(json.dumps({"eval_score": 0.1}))
    done, why = stage_status(cfg, "distill")
    assert not done and "changed since" in why


def test_the_distill_output_directory_follows_the_config(tmp_path):
    assert output_dir(config(tmp_path, "distill.output=small"), "distill") == tmp_path / "small"


def test_force_redoes_a_stage_and_every_later_one():
    assert [s for s in ORDER if forced(s, "evaluate")] == ["evaluate", "tune", "compare"]
    assert not any(forced(s, None) for s in ORDER)
