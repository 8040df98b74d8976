"""The shared entrypoint of every stage: arguments, config, the console, Ray, exit codes."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raykd.config import ConfigError, RaykdConfig, load_config, user_error
from raykd.config_reference import help_text
from raykd.pipeline.console import QuietConsole, show
from raykd.ray_auth import check_cluster_auth
from raykd.tracking.tracker import check_clients

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
BOOTSTRAP_FILE = "/tmp/ray/ray_current_cluster"  # where `ray start` records the cluster it started


def config_parser(description: str, reads: tuple[str, ...] | None = None, config: bool = True
                  ) -> argparse.ArgumentParser:
    """A command's parser: ``[--config FILE] [key=value ...]``, its ``--help`` listing the config keys
    in ``reads`` (sections or dotted keys, as ``raykd.pipeline.state.STAGES``; None: every key) with
    their defaults, ranges and help. Commands add their own options to it."""
    parser = argparse.ArgumentParser(description=description, epilog=help_text(reads),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if config:
        parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. distill.alpha=0.7")
    return parser


def load_or_fail(path: str | None, overrides: list[str]) -> RaykdConfig:
    """The validated config; a bad one exits 2 with one line."""
    try:
        return load_config(path, overrides)
    except ConfigError as e:
        fail(e)


def parse_stage_args(argv: list[str] | None, description: str, reads: tuple[str, ...] | None = None
                     ) -> RaykdConfig:
    """``--config FILE [key=value ...]`` → a validated config; a bad one exits 2 with one line."""
    args = config_parser(description, reads).parse_args(argv)
    return load_or_fail(args.config, args.overrides)


def fail(error: Exception) -> None:
    """One line: our errors are one line, and Ray appends its retry hints to an error it carried."""
    print(f"raykd: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def init_ray() -> None:
    """Connect to the cluster in ``RAY_ADDRESS`` (set by ``ray job submit``) or start a local one.

    Without RAY_ADDRESS we ask for a new local cluster explicitly: a bare ``ray.init()`` would join
    whatever cluster ``/tmp/ray/ray_current_cluster`` names, even a dead one, and then wait on that address.
    """
    import ray
    import ray.data

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        warn_if_stale_bootstrap_file()
    else:
        check_cluster_auth(address)
    ray.init(address=address, namespace="raykd")
    # Ray Data wraps an error of a map function in UserCodeException and the original is lost on its way
    # to the driver; raising the original keeps a DataError (a null field, say) one line for the user.
    ray.data.DataContext.get_current().raise_original_map_exception = True


def warn_if_stale_bootstrap_file(path: str = BOOTSTRAP_FILE) -> None:
    """One line when ``path`` names a cluster that no longer answers (a killed ``ray start`` leaves it).

    Ray's state API, which Ray Train's placement-group cleaner calls, resolves the cluster from this
    file before the running local one: with a dead address every training run ends only when the
    cleaner gives up on its state calls.
    """
    try:
        host, port = Path(path).read_text().strip().rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=1).close()
    except (OSError, ValueError):
        if os.path.exists(path):
            print(f"raykd: warning: {path} names a Ray cluster that does not answer (left by a `ray start` "
                  "that was killed); every training run waits for it to time out. Remove the file or run `ray stop`.",
                  file=sys.stderr)


def run_stage(name: str, stage: Callable[[RaykdConfig], Any], cfg: RaykdConfig,
              precheck: Callable[[RaykdConfig], None] | None = None) -> Any:
    """Run one command under Ray; the tracking clients' presence and ``precheck(cfg)`` are checked first,
    before any Ray work. The terminal shows raykd's lines only; everything the driver and Ray print goes
    to ``RUN/logs/<name>.log``. Bad input (config, data, models, tokenizers) exits 2 with one line,
    Ctrl-C exits 130 with one line, any other failure exits 1 with one line naming its cause and the log
    (which holds the traceback)."""
    log = Path(cfg.run_dir) / "logs" / f"{name}.log"
    with QuietConsole(log):
        print(f"[{name}] full output, Ray's included: {log}; Ray's own logs: /tmp/ray/session_latest/logs",
              flush=True)
        try:
            check_clients(cfg.tracking)
            if precheck is not None:
                precheck(cfg)
            init_ray()
            return stage(cfg)
        except KeyboardInterrupt as e:
            print(f"raykd: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as e:
            cause = user_error(e)
            if cause is not None:
                fail(cause)
            traceback.print_exc()
            last = [line for line in str(e).strip().splitlines() if line.strip()] or [""]
            show(f"raykd: error: {type(e).__name__}: {last[-1].strip()[:300]} (traceback: {log})")
            sys.exit(EXIT_FAILED)
        finally:
            disconnect_ray()


def disconnect_ray() -> None:
    """Leave Ray while the console still holds the terminal: disconnecting joins the driver's thread that
    prints the workers' forwarded output, so none of it reaches the terminal after the console closes."""
    if "ray" in sys.modules:
        sys.modules["ray"].shutdown()


def write_metrics(directory: Path, metrics: dict) -> Path:
    """Write ``metrics.json`` (the stage's machine-readable figures) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path
