"""Stage 4: search distillation temperature and alpha (optionally lr, the divergence and jsd_beta) with Ray Tune.

    raykd tune --config configs/demo.yaml
    raykd tune --config configs/demo.yaml tune.num_samples=16 "tune.lr=[1e-4,1e-2]"
    python -m tuning.sweep --config configs/demo.yaml tune.search=optuna     # pip install -e ".[tune]"
    raykd tune --config configs/demo.yaml tune.workers_per_trial=2 distill.sharding=fsdp

Every trial runs ``ray_jobs.distill_student.fit_student`` (the distillation job's own loop) in its own
process, or, with ``tune.workers_per_trial`` > 1, as a TorchTrainer of that many workers inside the
trial (a student that needs several GPUs), reading the one teacher cache from the object store: the
teacher's forward pass runs zero times (counted per trial and reported). Every ``tune.eval_every``
steps ASHA compares the trials on ``tune.metric`` and stops the worst: the held-out task score by
default; ``kl``, the KL to the teacher on its cached held-out rows (favours alpha near 1);
``acceptance``, the student's acceptance rate as the teacher's speculative draft on those rows; ``ce``,
cross-entropy on the labels (favours alpha near 0). Writes ``RUN/tune/`` (results.parquet/csv,
best_config.yaml, sweep.png, metrics.json); re-running after an interruption resumes the experiment
(Tuner.restore).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time

import ray.data
import ray.train
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from ray_jobs.distill_student import fit_student
from raykd.cache.schema import CacheManifest
from raykd.cache.store import block_source, publish
from raykd.cache.store import held_out_rows as held_out_teacher_rows
from raykd.config import ConfigError, RaykdConfig, TuneConfig, from_dict
from raykd.data.datasets import held_out_rows
from raykd.data.examples import REFERENCED_KINDS
from raykd.data.tokens import load_tokenizer
from raykd.evaluation.scoring import score_model
from raykd.launch import parse_stage_args, run_stage
from raykd.models.student import check_student
from raykd.pipeline.runs import distill_inputs, fingerprint, run_name
from raykd.pipeline.state import STAGES
from raykd.pipeline.summary import versus_sentence
from raykd.tracking.stage import record, stage_run, tracked
from raykd.training.distill import DistillSetup, held_out_divergence, training_data
from raykd.training.loop import EvalFn
from raykd.training.session import train_session, tune_session
from raykd.training.sweep_trial import trial_config
from raykd.training.trainer import train_run_name, trainer_for
from tuning.results import summarize, unfinished
from tuning.space import config_point, finite_loss, search_space
from tuning.tracking import TrialTracking

# tune.metric -> (the reported column trials are ranked by, Tune's mode)
OBJECTIVES = {"score": ("eval_score", "max"), "kl": ("eval_kl", "min"), "ce": ("eval_loss", "min"),
              "acceptance": ("eval_acceptance", "max")}
TEACHER_METRICS = ("kl", "acceptance")  # measured on the cache's held-out teacher rows
RUN_KNOBS = ("resume", "max_concurrent_trials", "cpus_per_trial", "gpus_per_trial")  # how, not what, it runs


def trial_evaluator(cfg: RaykdConfig, setup: DistillSetup, rows: list[dict], kind: str, teacher_rows: dict | None,
                    source: str) -> EvalFn:
    """What a trial reports every eval_every steps: the held-out loss, the held-out score (every time when
    ``tune.metric`` is score, else at the end: generation is the slow part), where its cache blocks were
    found (``raykd.cache.store.block_source``) and, with ``teacher_rows`` (``TEACHER_METRICS``), the KL to
    the teacher on them or the student's acceptance rate as its draft (one minus the total variation).
    On several workers every rank evaluates (a sharded model's forward passes are collective); rank 0's
    figures are reported."""
    tokenizer = load_tokenizer(setup.tokenizer)
    every_time = cfg.tune.metric == "score"

    def to_teacher(model) -> dict:
        if teacher_rows is None:
            return {}
        if cfg.tune.metric == "kl":
            return {"eval_kl": finite_loss(held_out_divergence(model, teacher_rows, setup.vocab, cfg.task))}
        acceptance = 1 - held_out_divergence(model, teacher_rows, setup.vocab, cfg.task, loss="tvd")
        return {"eval_acceptance": acceptance if math.isfinite(acceptance) else 0.0}  # diverged: never accepted

    def evaluate(model, final: bool) -> dict:
        held_out = score_model(model, tokenizer, rows, cfg.data, cfg.task, kind, generate=final or every_time,
                               scorer=cfg.evaluate.scorer)
        return {"eval_loss": finite_loss(held_out["loss"]), "data_source": source} | to_teacher(model) | (
            {"eval_score": held_out["score"]} if final or every_time else {})

    return evaluate


def trial(sampled: dict, base: dict, data, setup: DistillSetup, rows: list[dict], kind: str,
          teacher_rows: dict | None) -> None:
    """One Tune trial: distil with the sampled knobs from ``data`` (the cache's blocks in the object
    store), in this process, or (``tune.workers_per_trial`` > 1) as a TorchTrainer of that many workers
    whose rank-0 reports reach Tune through ``TuneReportCallback``; a restarted trial resumes the
    TorchTrainer's own checkpoints."""
    cfg = from_dict(trial_config(base, sampled))
    ray.data.DataContext.get_current().enable_progress_bars = False  # one bar per trial floods the log
    context = {"setup": setup, "rows": rows, "kind": kind, "teacher_rows": teacher_rows,
               "source": block_source(data, CacheManifest.read(cfg.stage_dir("teacher_cache")))}
    if cfg.tune.workers_per_trial == 1:
        fit_student(cfg, setup, data, tune_session(), trial_evaluator(cfg, **context))
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    name = f"trial-{tune.get_context().get_trial_id()}"
    trainer_for(cfg, cfg.distill, train_run_name(cfg, cfg.distill, name, {"trial": trial_inputs(cfg)}), trial_worker,
                {"train": data}, extra=context, callbacks=[TuneReportCallback()]).fit()


def trial_inputs(cfg: RaykdConfig) -> dict:
    """What a multi-worker trial's TorchTrainer run is named by: its config, less where it is tracked."""
    return {k: v for k, v in cfg.to_dict().items() if k != "tracking"}


def trial_worker(config: dict) -> None:
    """One worker of a multi-worker trial: the distillation loop on its shard of the cache."""
    cfg = from_dict(config["cfg"])
    context = {k: config[k] for k in ("setup", "rows", "kind", "teacher_rows", "source")}
    fit_student(cfg, config["setup"], ray.train.get_dataset_shard("train"), train_session(),
                trial_evaluator(cfg, **context))


def searcher(cfg: RaykdConfig):
    """Random search (seeded by ``cfg.seed``), or Optuna's TPE when asked and installed; either runs at
    most ``tune.max_concurrent_trials`` at once (Tune ignores that TuneConfig knob for random search)
    and starts with the config's own point (one of the ``tune.num_samples`` trials) when it lies in the
    search ranges."""
    point = config_point(cfg.tune, cfg.distill)
    if point is None:
        print("[tune] the config's own distill knobs lie outside the search ranges: no trial runs them, and the "
              "sweep is not compared with them", flush=True)
    limit, first = cfg.tune.max_concurrent_trials, [point] if point else None
    if cfg.tune.search == "optuna":
        try:
            from ray.tune.search import ConcurrencyLimiter
            from ray.tune.search.optuna import OptunaSearch

            return ConcurrencyLimiter(OptunaSearch(points_to_evaluate=first, seed=cfg.seed),
                                      max_concurrent=limit)
        except (ImportError, AssertionError):
            raise ConfigError("tune.search=optuna needs optuna: pip install -e '.[tune]'") from None
    return BasicVariantGenerator(points_to_evaluate=first, random_state=cfg.seed, max_concurrent=limit)


def sweep_inputs(cfg: RaykdConfig, setup: DistillSetup) -> dict:
    """What a sweep's trials depend on: the distillation inputs and the search (see ``raykd.pipeline.runs``)."""
    search = {k: v for k, v in dataclasses.asdict(cfg.tune).items() if k not in RUN_KNOBS}
    inputs = distill_inputs(cfg, setup.tokenizer, setup.teacher) | {"stage": "tune", "tune": search}
    if cfg.tune.metric in TEACHER_METRICS:  # what trials are ranked against
        inputs["held_out"] = CacheManifest.read(cfg.stage_dir("teacher_cache")).held_out_shards
    return inputs


def make_tuner(cfg: RaykdConfig, trainable, name: str, callbacks: list) -> tune.Tuner:
    t = cfg.tune
    metric, mode = OBJECTIVES[t.metric]
    scheduler = ASHAScheduler(time_attr="step", max_t=t.steps, grace_period=min(t.grace_period, t.steps),
                              reduction_factor=t.reduction_factor)
    return tune.Tuner(
        trainable,
        param_space=search_space(t),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=t.num_samples, scheduler=scheduler,
                                    search_alg=searcher(cfg)),
        run_config=tune.RunConfig(name=name, storage_path=str(cfg.stage_dir("tune")),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  callbacks=[*callbacks, CSVLoggerCallback(), JsonLoggerCallback()]),
    )


def sweep_name(cfg: RaykdConfig, setup: DistillSetup) -> str:
    """``sweep-<fingerprint of its inputs>``, the sweep's folder in ``RUN/tune``; ``tune.resume=false``
    deletes an earlier sweep of that name."""
    inputs = sweep_inputs(cfg, setup)
    path = cfg.stage_dir("tune") / f"sweep-{fingerprint(inputs)}"
    if not cfg.tune.resume and path.exists():
        print(f"[tune] tune.resume=false: deleting the previous sweep in {path}")
        shutil.rmtree(path)
    return run_name("sweep", inputs, cfg.stage_dir("tune"), "tune")


def tuner_for(cfg: RaykdConfig, name: str, trainable, callbacks: list) -> tune.Tuner:
    """A restored Tuner when an interrupted sweep ``name`` exists, else a new one in ``RUN/tune/<name>``."""
    path = cfg.stage_dir("tune") / name
    if path.exists() and tune.Tuner.can_restore(str(path)):
        print(f"[tune] resuming the sweep in {path}: finished trials are kept, its saved search space is used "
              "(tune.resume=false starts over)", flush=True)
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    return make_tuner(cfg, trainable, name, callbacks)


def trial_resources(t: TuneConfig) -> dict:
    """What a trial's own process asks for: the trial's CPUs/GPUs when it trains itself; a sliver of a CPU
    when its TorchTrainer's workers hold them (Tune refuses 0)."""
    return {"cpu": t.cpus_per_trial, "gpu": t.gpus_per_trial} if t.workers_per_trial == 1 else {"cpu": 0.01}


def run(cfg: RaykdConfig) -> dict:
    """Run (or resume) the sweep and write RUN/tune/; returns its metrics."""
    started = time.time()
    if cfg.distill.teacher_source == "none":
        raise ConfigError("raykd tune searches the teacher's temperature and alpha: distill.teacher_source "
                          "must be cache (or online, to measure what the cache saves)")
    if cfg.distill.on_policy_fraction:
        raise ConfigError(f"'distill.on_policy_fraction' = {cfg.distill.on_policy_fraction}: raykd tune trains its "
                          "trials on the cache only; set it to 0 for the sweep (raykd distill runs on-policy)")
    cache_dir = cfg.stage_dir("teacher_cache")
    manifest = CacheManifest.read(cache_dir)
    # Trials hold the CPUs, leaving none for Ray Data tasks (reading Parquet, even from_arrow_refs'
    # metadata): publish the cache to the object store and build its dataset here, before any trial.
    publish(cache_dir, manifest)
    data, setup = training_data(cfg)  # also checks the cache's teacher and tokenizer
    data = data.materialize()  # a no-op on the cache's blocks; runs teacher_source=online's column drop now
    check_student(cfg)
    rows, kind = held_out_rows(cfg.data.eval, cfg.data, cfg.task)
    if cfg.tune.metric == "score" and cfg.task == "causal_lm" and kind not in REFERENCED_KINDS:
        raise ConfigError(f"tune.metric=score needs prompt/completion or conversation rows in data.eval "
                          f"({cfg.data.eval} is plain text, which has no task score): set tune.metric=ce")
    metric, mode = OBJECTIVES[cfg.tune.metric]
    teacher_rows = held_out_teacher_rows(cache_dir, manifest) if cfg.tune.metric in TEACHER_METRICS else None
    trainable = tune.with_resources(
        tune.with_parameters(trial, base=cfg.to_dict(), data=data, setup=setup, rows=rows, kind=kind,
                             teacher_rows=teacher_rows),
        trial_resources(cfg.tune))
    print(f"[tune] {cfg.tune.num_samples} trials of {cfg.tune.steps} steps, {cfg.tune.max_concurrent_trials} at "
          f"a time, {cfg.tune.search} search, ASHA on {metric} ({mode}) every {cfg.tune.eval_every} steps", flush=True)
    name = sweep_name(cfg, setup)
    # Tune's own TensorBoard logger would write each trial's curves a second time, beside raykd's; its
    # CSV and JSON loggers are passed explicitly (the trials' result.json files)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    with tracked(cfg, stage_run(cfg, "tune", name)) as tracker:
        grid = tuner_for(cfg, name, trainable, [TrialTracking(cfg.to_dict(), tracker.run)]).fit()
        missing = unfinished(grid, cfg.tune.num_samples)
        if missing:  # Ctrl-C: Tune saved the experiment and returned early
            raise KeyboardInterrupt(f"sweep interrupted with {missing} trials unfinished; run the same command "
                                    "again to resume it (or set tune.resume=false to start over)")
        out = cfg.stage_dir("tune")
        metrics = summarize(grid, cfg, metric, mode, out, time.time() - started)
        record(tracker, metrics, 0, files=(out / "sweep.png", out / "results.csv", out / "best_config.yaml"))
    print(f"[tune] best of {metrics['trials']} trials: temperature {metrics['best_temperature']:.3g}, "
          f"alpha {metrics['best_alpha']:.3g}, loss {metrics['best_loss']}, held-out loss "
          f"{metrics['best_eval_loss']:.4f}, score "
          f"{metrics['best_score']} (ranked by {metric}); {metrics['stopped_early']} stopped early; teacher "
          f"forward passes {metrics['teacher_forward_passes']}\n[tune] {versus_sentence(metrics)}\n"
          f"[tune] best config: {metrics['best_config']}",
          flush=True)
    return metrics


def main(argv: list[str] | None = None) -> None:
    cfg = parse_stage_args(argv, __doc__.splitlines()[0], STAGES["tune"].reads)
    run_stage("tune", run, cfg)


if __name__ == "__main__":
    main()

