"""A Ray Train ``TorchTrainer`` sized by a training stage's config, and its ``fit`` that leaves no stray checkpoint."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs
from ray.train import CheckpointConfig, FailureConfig, Result, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from raykd.config import RaykdConfig, TrainConfig
from raykd.pipeline.runs import run_name
from raykd.tracking.stage import record, stage_run, tracked


def train_run_name(cfg: RaykdConfig, stage: TrainConfig, base: str, inputs: dict) -> str:
    """The Ray Train run name: ``<run_name or base>-<fingerprint of inputs>`` (``raykd.pipeline.runs``), so
    only a run with the same inputs resumes its checkpoints under ``RUN/checkpoints/<name>``."""
    return run_name(stage.run_name or base, inputs, cfg.stage_dir("checkpoints"), base.split("-")[0])


def trainer_for(cfg: RaykdConfig, stage: TrainConfig, name: str, loop, datasets: dict, extra: dict | None = None,
                callbacks: list | None = None) -> TorchTrainer:
    """A TorchTrainer sized by the stage's config, checkpointing under ``RUN/checkpoints/<name>``
    (``train_run_name``); its loop config is ``{"cfg": the config dict} | extra``. ``callbacks``: Ray
    Train ``UserCallback``s (a Tune trial's ``TuneReportCallback``)."""
    use_gpu = stage.gpus_per_worker > 0
    resources = {"CPU": stage.cpus_per_worker} | ({"GPU": stage.gpus_per_worker} if use_gpu else {})
    return TorchTrainer(
        loop,
        train_loop_config={"cfg": cfg.to_dict()} | (extra or {}),
        scaling_config=ScalingConfig(num_workers=stage.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=str(cfg.stage_dir("checkpoints")),
            failure_config=FailureConfig(max_failures=stage.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
        datasets=datasets,
    )


def fit(trainer: TorchTrainer) -> Result:
    """``trainer.fit()``, then delete the checkpoint directories in the run's storage that the controller
    never registered. A worker killed while its checkpoint was being copied (or after, before the
    controller took its report) leaves one behind, half-written or whole; nothing reads it (a restart
    resumes from the latest *registered* checkpoint) and nothing else would ever delete it."""
    result = trainer.fit()
    kept = {posixpath.basename(c.path) for c, _ in result.best_checkpoints or []}
    kept |= {posixpath.basename(result.checkpoint.path)} if result.checkpoint else set()
    fs = result.filesystem
    for info in fs.get_file_info(pyarrow.fs.FileSelector(result.path)):
        if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_") \
                and info.base_name not in kept:
            fs.delete_dir(info.path)
    return result


def tracked_fit(cfg: RaykdConfig, stage: str, train: TrainConfig, name: str, loop, datasets: dict, extra: dict,
                finish: Callable[[Result], dict], out: Path, release: Callable[[], None] = lambda: None) -> dict:
    """A training stage under its tracker run ``name``: fit (the workers log their steps to the run),
    ``release()`` (what only training needed, fit failed or not), ``finish(result)`` (export and score;
    returns the metrics written to ``out/metrics.json``), then the metrics, that file and, with
    ``tracking.log_models``, the exported model recorded at the last step."""
    with tracked(cfg, stage_run(cfg, stage, name)) as tracker:
        try:
            result = fit(trainer_for(cfg, train, name, loop, datasets,
                                     extra={**extra, "tracker": tracker.for_workers()}))
        finally:
            release()
        metrics = finish(result)
        record(tracker, metrics, metrics["steps"], files=(out / "metrics.json",), model=out)
    return metrics
