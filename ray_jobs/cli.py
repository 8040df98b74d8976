"""``raykd <command>``: one entry point for every stage (see README.md)."""

from __future__ import annotations

import sys

COMMANDS = {
    "finetune": "ray_jobs.finetune_teacher",
    "cache": "ray_jobs.cache_teacher_logits",
    "distill": "ray_jobs.distill_student",
    "evaluate": "ray_jobs.evaluate",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: raykd {" + ",".join(COMMANDS) + "} [--config FILE] [key=value ...]", file=sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"raykd: error: unknown command {argv[0]!r}", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    import importlib

    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    main()
