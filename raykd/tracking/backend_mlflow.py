"""The MLflow backend, through ``MlflowClient`` only (no global active run, so a process can hold several
runs and a Train worker never touches the driver's state). The run is found again by its ``raykd.key``
tag; a trial's run names its sweep's run as parent (``mlflow.parentRunId``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from raykd.tracking.runs import TrackedRun

BATCH = 100  # MLflow's limit on params per log_batch call (and a modest number of metrics)
KEY_TAG, PARENT_TAG = "raykd.key", "mlflow.parentRunId"


def tracking_uri(uri: str, run_dir: str) -> str:
    """``tracking.mlflow_uri`` as MLflow takes it: empty is ``sqlite:///RUN/mlflow.db``; a local path (made
    absolute when the config loads) ending in ``.db`` is a SQLite file, another a file store directory;
    anything with a scheme (``http://``, ``databricks``) is MLflow's to read."""
    if not uri:
        return f"sqlite:///{Path(run_dir) / 'mlflow.db'}"
    if not uri.startswith("/"):
        return uri
    return f"sqlite:///{uri}" if uri.endswith(".db") else Path(uri).as_uri()


def artifact_root(uri: str) -> str | None:
    """Where a local store keeps artifacts: ``mlartifacts/`` beside its database or in its directory
    (MLflow's default is ``./mlruns`` of whichever process made the experiment); a server's are its own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    if uri.startswith("file://"):
        return uri.rstrip("/") + "/mlartifacts"
    return None


def check_server(uri: str) -> None:
    """Fail fast when an HTTP tracking server does not answer: MLflow's client would retry each call for
    minutes. Its retries are also capped here (unless the environment sets them) so a server that goes
    away mid-run costs seconds per call, not a stalled training step."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    if uri.startswith(("http://", "https://")):
        import httpx

        httpx.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()


class MlflowBackend:
    """Params once (MLflow refuses a changed value), metrics per step, files and folders as artifacts."""

    name = "mlflow"

    def __init__(self, run: TrackedRun, settings) -> None:
        uri = tracking_uri(settings.mlflow_uri, run.run_dir)
        self.where = uri
        check_server(uri)
        from mlflow.tracking import MlflowClient

        self._client = client = MlflowClient(tracking_uri=uri)
        experiment = self._experiment_id(settings.experiment, artifact_root(uri))
        found = self._find(experiment, run.key)
        if found is None:
            tags = run.tags(settings.tags)
            parent = self._find(experiment, run.parent_key) if run.parent_key else None
            if parent is not None:
                tags[PARENT_TAG] = parent.info.run_id
            found = client.create_run(experiment, run_name=run.name, tags=tags)
        elif found.info.status != "RUNNING":
            client.update_run(found.info.run_id, status="RUNNING")
        self.run_id = found.info.run_id
        self.params = set(found.data.params)
        self.logged = {key: max(m.step for m in client.get_metric_history(self.run_id, key))
                       for key in found.data.metrics}

    def _experiment_id(self, name: str, artifacts: str | None) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self._client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self._client.create_experiment(name, artifact_location=artifacts)
        except MlflowException:  # made meanwhile by another process (a trial, a worker)
            return self._client.get_experiment_by_name(name).experiment_id

    def _find(self, experiment: str, key: str):
        runs = self._client.search_runs([experiment], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1)
        return runs[0] if runs else None

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), BATCH):
            self._client.log_batch(self.run_id, params=items[start:start + BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        for start in range(0, len(items), BATCH):
            self._client.log_batch(self.run_id, metrics=items[start:start + BATCH])

    def log_artifact(self, path: Path, folder: str) -> None:
        self._client.log_artifact(self.run_id, str(path), folder or None)

    def finish(self, failed: bool | None) -> None:
        if failed is not None:
            self._client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
