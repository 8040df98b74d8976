"""`raykd pipeline` as a user runs it: killed (SIGKILL, then Ctrl-C), re-run, it continues where it
stopped and ends with the same summary; the terminal shows raykd's lines only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ray_jobs.pipeline import redo_config
from raykd.config import load_config
from raykd.pipeline.console import terminal_line
from raykd.pipeline.state import ORDER, stage_fingerprint
from tests.conftest import DEMO, REPO, free_port

pytestmark = pytest.mark.slow

SMALL = ["cache.include_unlabeled=false", "data.eval_examples=16", "finetune.steps=6", "finetune.checkpoint_every=3",
         "finetune.log_every=2", "distill.steps=6", "distill.checkpoint_every=3", "distill.log_every=2",
         "tune.num_samples=2", "tune.steps=6", "tune.eval_every=3", "tune.grace_period=3",
         "serve.compare_requests=4", "serve.compare_concurrency=[1,2]", "serve.compare_max_tokens=4"]


def start(run_dir, *extra: str) -> subprocess.Popen:
    """``raykd pipeline`` on the small config, its server on a free port (another each time: the port
    is not part of any stage's fingerprint)."""
    cmd = [sys.executable, "-m", "raykd.cli", "pipeline", "--config", str(DEMO), f"run_dir={run_dir}", *SMALL,
           f"serve.port={free_port()}", *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: ours to kill, Ray's processes too


def read_until(proc: subprocess.Popen, text: str, lines: list[str]) -> None:
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if text in line:
            return
    raise AssertionError(f"the pipeline ended (rc {proc.wait()}) before printing {text!r}:\n" + "\n".join(lines[-40:]))


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, list[str]]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.splitlines()


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def readable(line: str) -> bool:
    """raykd's own lines (no Ray log line, no traceback) or the closing summary's."""
    return not line.strip() or terminal_line(line) == line or line.startswith(("| ", "|---", "Stages run", "summary:"))


def summary_rows(run_dir) -> dict[str, tuple[str, str]]:
    """stage -> (wall time, headline) from RUN/summary.md, less the 'this run' column."""
    rows = [ln.split(" | ") for ln in (run_dir / "summary.md").read_text().splitlines() if ln.startswith("| ")]
    return {r[0].lstrip("| "): (r[2], r[3]) for r in rows[1:]}


def test_a_killed_pipeline_continues_where_it_stopped_with_the_same_summary(tmp_path):
    run = tmp_path / "run"
    first, lines = start(run), []
    try:
        read_until(first, "=== raykd distill", lines)  # fine-tune and cache are done
        kill_group(first, signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        kill_group(first, signal.SIGKILL)
    progress = [ln for ln in lines if ln.startswith("[finetune] step")]
    assert progress and len(progress) == len(set(progress)), progress  # each progress line once, with an ETA
    assert all(" eta " in ln for ln in progress)
    assert all(readable(ln) for ln in lines), [ln for ln in lines if not readable(ln)]

    second, lines = start(run), []
    try:
        read_until(second, "=== raykd tune", lines)
        assert any(ln.startswith("[pipeline] finetune: skipped") for ln in lines)
        assert any(ln.startswith("[pipeline] cache: skipped") for ln in lines)
        assert "=== raykd distill (not run yet) ===" in lines
        time.sleep(5)  # the sweep is starting
        second.send_signal(signal.SIGINT)  # Ctrl-C, to the driver
        rc, rest = finish(second, timeout=180)
    finally:
        kill_group(second, signal.SIGKILL)
    assert rc == 130, rest[-20:]

    rc, lines = finish(start(run))
    assert rc == 0, lines[-30:]
    skipped = [s for s in ORDER if any(ln.startswith(f"[pipeline] {s}: skipped") for ln in lines)]
    assert skipped == ["finetune", "cache", "distill", "evaluate"], lines
    assert all(readable(ln) for ln in lines), [ln for ln in lines if not readable(ln)]
    summary = summary_rows(run)
    assert list(summary) == list(ORDER)
    assert "student - baseline" in summary["evaluate"][1] and "served p50 speedup c1" in summary["compare"][1]
    assert (run / "logs" / "pipeline.log").stat().st_size > 0

    rc, lines = finish(start(run))
    assert rc == 0, lines[-30:]
    assert [s for s in ORDER if any(ln.startswith(f"[pipeline] {s}: skipped") for ln in lines)] == list(ORDER), lines
    assert summary_rows(run) == summary


def test_a_forced_stage_trains_afresh_and_still_counts_as_this_config(tmp_path):
    cfg = load_config(DEMO, [f"run_dir={tmp_path}"])
    for stage in ORDER:
        redo = redo_config(cfg, stage)
        assert stage_fingerprint(redo, stage) == stage_fingerprint(cfg, stage) or stage == "tune"
    assert redo_config(cfg, "finetune").finetune.run_name.startswith("finetune-redo-")
    assert redo_config(cfg, "tune").tune.resume is False


def test_a_failing_stage_ends_with_its_cause_in_one_line(tmp_path):
    rc, lines = finish(start(tmp_path / "run", f"data.train={tmp_path / 'missing.jsonl'}"), timeout=300)
    errors = [ln for ln in lines if ln.startswith("raykd: error:")]
    assert rc == 2 and len(errors) == 1 and "missing.jsonl" in errors[0], lines
    assert all(readable(ln) for ln in lines), lines  # no traceback, no Ray log line
    assert not (tmp_path / "run" / "pipeline" / "stages" / "finetune.json").exists()
