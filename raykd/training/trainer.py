"""A Ray Train ``TorchTrainer`` sized by a training stage's config."""

from __future__ import annotations

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from raykd.config import RaykdConfig, TrainConfig
from raykd.runs import run_name


def trainer_for(cfg: RaykdConfig, stage: TrainConfig, base: str, loop, datasets: dict, inputs: dict,
                extra: dict | None = None, callbacks: list | None = None) -> TorchTrainer:
    """A TorchTrainer sized by the stage's config, checkpointing under ``RUN/checkpoints/<name>``: the
    name is ``<run_name or base>-<fingerprint of inputs>`` (``raykd.runs``), so only a run with the same
    inputs resumes. ``callbacks``: Ray Train ``UserCallback``s (a Tune trial's ``TuneReportCallback``)."""
    storage = cfg.stage_dir("checkpoints")
    use_gpu = stage.gpus_per_worker > 0
    resources = {"CPU": stage.cpus_per_worker} | ({"GPU": stage.gpus_per_worker} if use_gpu else {})
    return TorchTrainer(
        loop,
        train_loop_config={"cfg": cfg.to_dict()} | (extra or {}),
        scaling_config=ScalingConfig(num_workers=stage.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name(stage.run_name or base, inputs, storage, base.split("-")[0]),
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=stage.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
        datasets=datasets,
    )
