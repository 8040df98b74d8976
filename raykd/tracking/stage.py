"""A stage's tracker run: opened with the resolved config as parameters, closed with the stage's figures
and artifacts; marked failed when the stage raises."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from raykd.config import RaykdConfig
from raykd.pipeline.state import output_dir, stage_fingerprint
from raykd.tracking.runs import TrackedRun, flat_params, numeric
from raykd.tracking.tracker import Tracker


def stage_run(cfg: RaykdConfig, stage: str, name: str | None = None, parent: str | None = None) -> TrackedRun:
    """The tracker run of ``stage`` (a key of ``raykd.pipeline.state.STAGES``). A training run is named
    ``name`` (its Ray Train name), so a resumed run continues its tracker run. A stage that logs its
    figures once, at its end (cache, evaluate, compare), is named by its fingerprint and the time: each
    completed run is a new measurement."""
    name = name or f"{stage}-{stage_fingerprint(cfg, stage)}-{time.strftime('%Y%m%d-%H%M%S')}"
    return TrackedRun(stage, name, cfg.run_dir, str(output_dir(cfg, stage)), parent)


@contextlib.contextmanager
def tracked(cfg: RaykdConfig, run: TrackedRun) -> Iterator[Tracker]:
    """A tracker for ``run`` holding the config as parameters; finished when the block ends, failed when
    it raises."""
    tracker = Tracker(cfg.tracking, run)
    tracker.log_params(flat_params(cfg.to_dict()))
    tracker.close()  # open again for the figures: meanwhile the stage's training workers write to the run
    try:
        yield tracker
    except BaseException:
        tracker.finish(failed=True)
        raise
    tracker.finish()


def record(tracker: Tracker, metrics: dict, step: int, files: tuple[Path, ...] = (), model: Path | None = None
           ) -> None:
    """A stage's final figures (the numbers in ``metrics``, nested keys joined by /) at ``step``, its
    ``files``, and with ``tracking.log_models`` the ``model`` directory it exported (as ``model/``)."""
    tracker.log_metrics(numeric(metrics), step)
    for path in files:
        tracker.log_artifact(Path(path))
    if model is not None and tracker.settings.log_models:  # its files: not the trackers' folders in it
        for path in sorted(Path(model).iterdir()):
            if path.is_file():
                tracker.log_artifact(path, "model")
