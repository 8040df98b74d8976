"""The terminal of every command that runs Ray (each stage, ``raykd pipeline`` / ``raykd demo``): everything
the process and its Ray workers print goes to a log file; the terminal shows raykd's own lines, once each,
``raykd: …`` lines (errors, warnings) on stderr and the others on stdout.

Ray forwards every worker's output to the driver with a prefix (``(RayTrainWorker pid=12)``), logs
its own INFO/WARNING lines there, and Train V2 forwards a training worker's print twice. The console
redirects file descriptors 1 and 2 into a pipe read by one thread, so output from C++, from Ray's
log monitor and from child processes is caught as well as Python's.
"""

from __future__ import annotations

import collections
import os
import re
import sys
import threading
import uuid
from pathlib import Path

TAGS = ("finetune", "cache", "distill", "evaluate", "tune", "serve", "compare", "pipeline", "recommend", "raykd")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours, and the cursor moves of Ray Data's progress bars
_REPEATED = re.compile(r"\s*\[repeated \d+x across cluster\].*$")  # and Ray's hint after it
_WORKER_PREFIX = re.compile(r"^\(.*?\bpid=\d+[^)]*\)\s*")  # "(MapWorker(MapBatches(X)) pid=7, ip=10.0.0.2) "
_RECENT = 256  # lines remembered to drop the doubles


def terminal_line(line: str) -> str | None:
    """The text the terminal shows for one line of output, or None: raykd's own lines (``[stage] …``,
    ``raykd: …``, ``=== … ===``) without Ray's worker prefix; everything else only in the log."""
    text = _REPEATED.sub("", _ANSI.sub("", line.rstrip("\n")).rsplit("\r", 1)[-1])
    text = _WORKER_PREFIX.sub("", text, count=1)
    if text.startswith("raykd:") or text.startswith("==="):
        return text
    tag = text[1:].split("]", 1)[0] if text.startswith("[") else ""
    return text if tag in TAGS else None


def show(text: str) -> None:
    """``text`` on the terminal as it is (a table, say), through the open console if there is one."""
    if QuietConsole.active is None:
        print(text, flush=True)
    else:
        QuietConsole.active.show(text)


class QuietConsole:
    """``with QuietConsole(log_path) as console:`` — fds 1 and 2 go to ``log_path`` (appended), raykd's
    lines also to the terminal; ``console.show(text)`` writes straight to both, after what came before."""

    active: QuietConsole | None = None  # the open console of this process (one at a time)

    def __init__(self, log_path: Path):
        self.log_path = Path(log_path)
        self._recent: collections.deque[str] = collections.deque(maxlen=_RECENT)
        self._marker = f"raykd-console-sync-{uuid.uuid4().hex}"
        self._synced = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> QuietConsole:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a", buffering=1, errors="replace")
        sys.stdout.flush(), sys.stderr.flush()
        self._saved = {fd: os.dup(fd) for fd in (1, 2)}
        self._terminal = {fd: os.fdopen(os.dup(self._saved[fd]), "w", buffering=1, errors="replace") for fd in (1, 2)}
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1), os.dup2(write_fd, 2)
        os.close(write_fd)
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(line_buffering=True)
        self._reader = threading.Thread(target=self._pump, args=(read_fd,), daemon=True, name="raykd-console")
        self._reader.start()
        QuietConsole.active = self
        return self

    def _write_terminal(self, text: str) -> None:
        self._terminal[2 if text.startswith("raykd:") else 1].write(text + "\n")

    def _pump(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "r", errors="replace") as pipe:
            for line in pipe:
                if line.strip() == self._marker:
                    self._synced.set()
                    continue
                shown = terminal_line(line)
                with self._lock:
                    self._log.write(line)
                    if shown is not None and shown not in self._recent:
                        self._recent.append(shown)
                        self._write_terminal(shown)

    def _sync(self) -> None:
        """Wait until everything printed so far has gone through the pipe."""
        self._synced.clear()
        print(self._marker, flush=True)
        self._synced.wait(timeout=10)

    def show(self, text: str) -> None:
        self._sync()
        with self._lock:
            self._log.write(text + "\n")
            self._write_terminal(text)

    def __exit__(self, *exc) -> None:
        self._sync()
        QuietConsole.active = None
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        # Ray's child processes may still hold the pipe open: don't wait for its end, the thread is a daemon.
        for terminal in self._terminal.values():
            terminal.flush()
        self._log.flush()
