"""``raykd <command>``: one entry point for every stage (see README.md)."""

from __future__ import annotations

import importlib
import os
import sys

# command -> (module, function): each stage is also ``python -m <module>``.
COMMANDS = {
    "demo": ("ray_jobs.pipeline", "demo"),
    "pipeline": ("ray_jobs.pipeline", "main"),
    "finetune": ("ray_jobs.finetune_teacher", "main"),
    "cache": ("ray_jobs.cache_teacher_logits", "main"),
    "distill": ("ray_jobs.distill_student", "main"),
    "evaluate": ("ray_jobs.evaluate", "main"),
    "tune": ("tuning.sweep", "main"),
    "serve": ("serving.app", "main"),
    "compare": ("serving.compare", "main"),
    "config": ("raykd.config_reference", "show"),
    "plan": ("raykd.plan.planner", "main"),
    "recommend": ("ray_jobs.recommend", "main"),
}
USAGE = "usage: raykd {" + ",".join(COMMANDS) + "} [--config FILE] [key=value ...]   (raykd COMMAND -h for help)"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        print(f"{USAGE}\nraykd: error: unknown command {argv[0]!r}", file=sys.stderr)
        sys.exit(2)
    module, function = COMMANDS[argv[0]]
    if module == "ray_jobs.pipeline":
        # Ray's log deduplication holds back lines that look alike (the trials' progress) and prints them
        # late, merged; the pipeline's console drops exact doubles itself. Read when Ray is imported.
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    getattr(importlib.import_module(module), function)(argv[1:])


if __name__ == "__main__":
    main()
