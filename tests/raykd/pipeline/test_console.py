"""The quiet terminal: raykd's lines once each, without Ray's prefixes; everything in the log."""

import subprocess
import sys

import pytest

from raykd.pipeline.console import terminal_line


@pytest.mark.parametrize("line, shown", [
    ("(RayTrainWorker pid=4242) [finetune] step 10/100 loss 2.1\n", "[finetune] step 10/100 loss 2.1"),
    ("\x1b[36m(RayTrainWorker pid=4242)\x1b[0m [distill] step 1/5", "[distill] step 1/5"),
    ("(MapWorker(MapBatches(TeacherScorer)) pid=7, ip=10.0.0.2) [cache] teacher actor: 64/~200 rows",
     "[cache] teacher actor: 64/~200 rows"),
    ("(TrainController pid=9) [tune] best of 4 trials [repeated 2x across cluster] (Ray deduplicates logs by "
     "default. Set RAY_DEDUP_LOGS=0 to disable log deduplication)", "[tune] best of 4 trials"),
    ("\x1b[A\x1b[36m(RayTrainWorker pid=5196)\x1b[0m [distill] step 10/150", "[distill] step 10/150"),
    ("Running 0: 12%|##   |\r(MapWorker pid=3) [cache] teacher actor: 64/~200", "[cache] teacher actor: 64/~200"),
    ("raykd: error: data.train: no such file", "raykd: error: data.train: no such file"),
    ("=== raykd cache (not run yet) ===", "=== raykd cache (not run yet) ==="),
    ("2026-12-04 18:00:00,000\tINFO worker.py:1 -- Started a local Ray instance.", None),
    ("(RayTrainWorker pid=1) [Train] Attempting to start training worker group", None),
    ("Traceback (most recent call last):", None),
    ("(pid=3) (a child's own parentheses) [cache] x", None),
])
def test_terminal_keeps_raykds_lines_without_rays_prefix(line, shown):
    assert terminal_line(line) == shown


CHILD = """
import os, subprocess, sys
from pathlib import Path
from raykd.pipeline.console import QuietConsole, show
with QuietConsole(Path(sys.argv[1])):
    print("[distill] step 1/2")
    print("(RayTrainWorker pid=5) [distill] step 1/2")  # Train V2's second copy
    print("INFO ray noise")
    os.write(2, b"(raylet) C++ noise on fd 2\\n")
    subprocess.run(["echo", "[cache] from a child process"])
    print("raykd: warning: shown on stderr")
    show("| stage | this run |")
show("after the console")
"""


@pytest.mark.slow
def test_console_sends_everything_to_the_log_and_raykds_lines_to_the_terminal(tmp_path):
    log = tmp_path / "logs" / "pipeline.log"
    out = subprocess.run([sys.executable, "-c", CHILD, str(log)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[distill] step 1/2", "[cache] from a child process", "| stage | this run |",
                                       "after the console"]
    assert out.stderr == "raykd: warning: shown on stderr\n"
    logged = log.read_text()
    for text in ("INFO ray noise", "C++ noise on fd 2", "(RayTrainWorker pid=5) [distill] step 1/2", "| stage |",
                 "raykd: warning"):
        assert text in logged
