"""The W&B backend: online, or offline files under ``RUN/<stage>/wandb`` for ``wandb sync``. The run id
is the run's key, so a resumed stage continues its run (``resume="allow"``). Every metric is plotted
against ``raykd/step``. What a resumed run already holds: online, the summary's ``raykd_steps`` (each
metric's last step); offline, the earlier offline files of the same run id."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from raykd.tracking.runs import TrackedRun

STEP, STEPS = "raykd/step", "raykd_steps"  # the x axis of every metric; the summary's {metric: last step}
BLOCK, HEADER = 32768, 7  # a .wandb file: LevelDB log blocks; its header and each record's (crc, length, type)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator:
    """The ``Record`` protos of a ``.wandb`` file: after the ``:W&B`` header, LevelDB log records (a record
    longer than a block's rest is split into first, middle and last parts; a block's last few bytes pad)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, offset, parts = path.read_bytes(), HEADER, b""
    while offset + HEADER <= len(data):
        rest = BLOCK - offset % BLOCK
        if rest < HEADER:
            offset += rest
            continue
        _, length, kind = struct.unpack_from("<IHB", data, offset)
        if offset + HEADER + length > len(data):  # cut short by a killed writer
            break
        chunk, offset = data[offset + HEADER:offset + HEADER + length], offset + HEADER + length
        if kind in (FULL, FIRST):
            parts = chunk
        elif kind in (MIDDLE, LAST):
            parts += chunk
        if kind in (FULL, LAST):
            yield Record.FromString(parts)


def history(path: Path) -> list[dict]:
    """The logged rows of a ``.wandb`` file, each ``{key: value}``."""
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records(path) if r.WhichOneof("record_type") == "history"]


def offline_steps(directory: Path, run_id: str) -> dict[str, int]:
    """``{metric: last step}`` over the earlier offline files of run ``run_id`` in ``directory`` (an offline
    run cannot ask the server what it holds)."""
    steps: dict[str, int] = {}
    for path in directory.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"):
        for row in history(path):
            for key in row.keys() - {STEP, "_step", "_runtime", "_timestamp"}:
                steps[key] = max(steps.get(key, -1), int(row.get(STEP, -1)))
    return steps


class WandbBackend:
    name = "wandb"

    def __init__(self, run: TrackedRun, settings) -> None:
        import wandb

        directory = Path(run.out_dir) / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        self.where = f"{settings.wandb_mode} ({directory})"
        self._run = wandb.init(
            project=settings.experiment, id=run.key, name=run.name, group=run.parent or run.stage,
            job_type=run.stage, tags=[f"{k}={v}"[:64] for k, v in run.tags(settings.tags).items()], resume="allow",
            mode=settings.wandb_mode, dir=str(directory), reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),
        )
        self._run.define_metric("*", step_metric=STEP)
        earlier = offline_steps(directory, run.key) if settings.wandb_mode == "offline" else {}
        self.logged: dict[str, int] = earlier | dict(self._run.summary.get(STEPS) or {})
        self.params = set(self._run.config.keys())

    def log_params(self, params: dict[str, str]) -> None:
        self._run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics | {STEP: step})
        self._run.summary[STEPS] = self.logged | dict.fromkeys(metrics, step)

    def log_artifact(self, path: Path, folder: str) -> None:
        """The file, among the run's files (by its name; W&B's files have no folders here)."""
        self._run.save(str(path), base_path=str(path.parent), policy="now")

    def finish(self, failed: bool | None) -> None:
        self._run.finish(exit_code=1 if failed else 0)
