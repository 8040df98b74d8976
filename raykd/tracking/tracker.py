"""One stage's tracker run, fanned out to every configured backend.

A backend that fails (a server that does not answer, a refused call) is one warning line and is dropped
for the rest of the stage: tracking never stops a stage, whose figures are in ``metrics.json`` anyway.
A point a run already holds (same metric, same or earlier step) is not logged again, so a stage resumed
after a kill continues its run without duplicated points; parameters a run holds are kept (MLflow
refuses to change one)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from raykd.config import ConfigError, TrackingConfig
from raykd.tracking.runs import TrackedRun

CLIENTS = {"tensorboard": ("tensorboardX", "tensorboardX"), "mlflow": ("mlflow", "mlflow"),
           "wandb": ("wandb", "wandb")}  # backend -> (module it imports, extra that installs it)


def check_clients(settings: TrackingConfig) -> None:
    """Refuse, before any work, a backend whose client is not installed (a ConfigError naming the extra)."""
    import importlib.util

    for name in settings.backends:
        module, extra = CLIENTS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"'tracking.backends' has {name}, whose client ({module}) is not installed: "
                              f"pip install -e '.[{extra}]' (or drop it from tracking.backends)")


def open_backend(name: str, run: TrackedRun, settings: TrackingConfig):
    if name == "tensorboard":
        from raykd.tracking.backend_tensorboard import TensorBoardBackend as cls
    elif name == "mlflow":
        from raykd.tracking.backend_mlflow import MlflowBackend as cls
    else:
        from raykd.tracking.backend_wandb import WandbBackend as cls
    return cls(run, settings)


FAILED: set[str] = set()  # backends that failed in this process: warned about once, not tried again


class Tracker:
    """The run ``run`` in every backend of ``settings``, opened on first use and again after ``close``."""

    def __init__(self, settings: TrackingConfig, run: TrackedRun) -> None:
        self.settings, self.run = settings, run
        self._backends: list | None = None

    @property
    def backends(self) -> list:
        if self._backends is None:
            self._backends = []
            for name in self.settings.backends:
                if name in FAILED:
                    continue
                try:
                    self._backends.append(open_backend(name, self.run, self.settings))
                except Exception as e:  # noqa: BLE001 - any failure of a tracker is a warning, never the stage's
                    self._drop(name, e)
        return self._backends

    def for_workers(self) -> Tracker:
        """This run's tracker for its training workers, less the backends that failed here: a tracker that
        failed once is one warning, not one per process."""
        working = [b for b in self.settings.backends if b not in FAILED]
        return Tracker(dataclasses.replace(self.settings, backends=working), self.run)

    def _drop(self, name: str, error: BaseException) -> None:
        FAILED.add(name)
        where = {"mlflow": self.settings.mlflow_uri or "RUN/mlflow.db", "wandb": self.settings.wandb_mode}.get(name)
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [""]
        print(f"raykd: warning: tracking: {name}{f' ({where})' if where else ''} failed: {type(error).__name__}: "
              f"{lines[0][:200]}; the {self.run.stage} stage goes on without it (its figures are in metrics.json)",
              file=sys.stderr, flush=True)

    def _each(self, action) -> None:
        for backend in list(self.backends):
            try:
                action(backend)
            except Exception as e:  # noqa: BLE001
                self._drop(backend.name, e)
                self._backends.remove(backend)

    def log_params(self, params: dict[str, str]) -> None:
        """Parameters the run does not hold yet."""
        def log(backend) -> None:
            new = {k: v for k, v in params.items() if k not in backend.params}
            if new:
                backend.log_params(new)
                backend.params |= set(new)

        self._each(log)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """``metrics`` at ``step``, less the points the run already holds."""
        def log(backend) -> None:
            new = {k: v for k, v in metrics.items() if backend.logged.get(k, -1) < step}
            if new:
                backend.log_metrics(new, step)
                backend.logged |= dict.fromkeys(new, step)

        self._each(log)

    def log_artifact(self, path: Path, folder: str = "") -> None:
        """A file (MLflow, W&B), in ``folder`` of the run's artifacts; ``.md`` and ``.png`` files also as
        TensorBoard text and images."""
        if path.exists():
            self._each(lambda backend: backend.log_artifact(path, folder))

    def close(self) -> None:
        """Flush and close every backend without marking the run (a training worker leaves that to the
        driver; the driver closes while its workers write); the next call opens them again."""
        if self._backends:
            self._each(lambda backend: backend.finish(None))
        self._backends = None

    def finish(self, failed: bool = False) -> None:
        """Close every backend; MLflow and W&B mark the run finished or failed."""
        self._each(lambda backend: backend.finish(failed))
        self._backends = []
