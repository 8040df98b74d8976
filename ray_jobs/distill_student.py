"""Stage 3: distil the student from the cached teacher logits as a Ray Train ``TorchTrainer`` job.

    raykd distill --config configs/demo.yaml
    python -m ray_jobs.distill_student --config configs/demo.yaml distill.alpha=1.0 distill.temperature=4
    ray job submit --working-dir . -- python -m ray_jobs.distill_student --config configs/llama70b_to_8b.yaml

Loss: ``alpha * T**2 * D(softmax(t/T), softmax(s/T)) + (1 - alpha) * CE(s, y)`` per valid token, D =
``distill.loss`` (forward KL by default; ``raykd.losses``). ``distill.on_policy_fraction`` of the batches
are the student's own samples scored by a teacher actor pool (``raykd.training.on_policy``).
``distill.teacher_source``: ``cache`` reads ``RUN/teacher_cache`` (object store,
else Parquet); ``online`` runs the teacher's forward pass in every step (the textbook baseline that
caching is measured against); ``none`` trains on ``data.train``'s hard labels only (alpha=0, the
no-teacher baseline). Writes ``RUN/<distill.output>/`` (HF directory) and its ``metrics.json``.
``fit_student`` is the training function every Ray Tune trial of ``raykd tune`` runs too.
"""

from __future__ import annotations

import functools
import time

import ray
import ray.train

from raykd.config import RaykdConfig, from_dict
from raykd.data.datasets import held_out_rows
from raykd.evaluation.scoring import score_task
from raykd.launch import parse_stage_args, run_stage, write_metrics
from raykd.models.export import export_checkpoint
from raykd.models.load import ForwardCounter, load_configured
from raykd.models.sharded_load import training_model
from raykd.models.student import build_student, check_student
from raykd.pipeline.runs import distill_inputs
from raykd.pipeline.state import STAGES
from raykd.training.checkpoints import restore_checkpoint
from raykd.training.distill import DistillSetup, make_loss_fn, training_data
from raykd.training.loop import EvalFn, make_optimizer, run_steps, use_bf16, worker_device
from raykd.training.on_policy import OnPolicyCounts, on_policy_for, teacher_pool
from raykd.training.session import Session, train_session
from raykd.training.trainer import tracked_fit, train_run_name


def fit_student(cfg: RaykdConfig, setup: DistillSetup, data, session: Session, evaluate: EvalFn | None = None,
                teachers: list | None = None) -> dict:
    """Distil a student from ``data`` (a Train shard or a whole dataset) under ``session``: build or
    resume, shard, train to ``distill.steps``. Shared by the Train job and every Ray Tune trial.
    ``setup``: what the driver resolved (``training_data``); ``teachers``: the on-policy teacher pool
    (``raykd.training.on_policy.teacher_pool``).

    Every report carries ``teacher_forward_passes`` (this process's count, the online teacher's and the
    pool's; 0 on the cache alone), the on-policy counts and ``evaluate``'s metrics. Returns the loop
    state plus those counts.
    """
    device = worker_device(cfg.distill, session)
    builder = functools.partial(build_student, cfg, None, teacher=setup.teacher)
    model, trainable = training_model(builder, cfg.models.student, cfg.distill, device, session.rank, session.world,
                                      use_bf16(cfg.distill, device), cfg.seed)
    teacher = None
    if cfg.distill.teacher_source == "online":
        frozen = load_configured(setup.teacher, cfg).to(device).eval().requires_grad_(False)
        teacher = ForwardCounter(frozen)
    optimizer, scheduler = make_optimizer(model.parameters(), cfg.distill)
    state = restore_checkpoint(model, optimizer, trainable, session)
    if state.step and session.rank == 0:
        print(f"[distill] resumed from checkpoint at step {state.step}", flush=True)
    on_policy = on_policy_for(cfg, teachers, model, setup.teacher)

    def counts() -> dict:
        sampled = on_policy.counts if on_policy else OnPolicyCounts()
        return {"teacher_forward_passes": (teacher.calls if teacher else 0) + sampled.teacher_passes,
                "on_policy_batches": sampled.batches, "generated_tokens": sampled.generated_tokens}

    def report_extra(model, final: bool) -> dict:
        return counts() | (evaluate(model, final) if evaluate else {})

    loss_fn = make_loss_fn(cfg.distill, cfg.task, setup.vocab, teacher, on_policy)
    state = run_steps(model, optimizer, scheduler, data, loss_fn, cfg.distill, state, trainable, device, "distill",
                      session, cfg.seed, report_extra)
    return state.__dict__ | counts()


def train_loop(config: dict) -> dict:
    """Per-worker loop of the Train job."""
    cfg = from_dict(config["cfg"])
    return fit_student(cfg, config["setup"], ray.train.get_dataset_shard("train"),
                       train_session(config.get("tracker")), teachers=config.get("teachers"))


def run(cfg: RaykdConfig) -> dict:
    """Distil the student; returns the metrics."""
    started = time.time()
    out = cfg.stage_dir(cfg.distill.output)
    check_student(cfg)  # also run by main() before Ray starts; here for stages that call run() (pipeline, evaluate)
    ds, setup = training_data(cfg)
    rows, kind = held_out_rows(cfg.data.eval, cfg.data, cfg.task)
    d = cfg.distill
    print(f"[distill] {ds.count()} rows from {setup.source}; teacher source {d.teacher_source}, alpha {d.alpha}, "
          f"T {d.temperature}, loss {d.loss}" + (f", on-policy {d.on_policy_fraction:.0%} of batches" if
                                                   d.on_policy_fraction else ""))
    # On-policy samples of a cached run are scored by a teacher pool; an online teacher scores its own.
    pool = []
    if d.on_policy_fraction and d.teacher_source == "cache":
        # Read the cache into the object store first (as a sweep does): Ray Data's Parquet read asks a
        # whole free CPU for its file listing, which workers plus a pool can leave no room for, and the
        # read then never starts.
        ds = ds.materialize()
        pool = teacher_pool(cfg, setup.teacher)
    name = train_run_name(cfg, d, f"distill-{d.output}", distill_inputs(cfg, setup.tokenizer, setup.teacher))
    metrics = tracked_fit(cfg, "distill", d, name, train_loop, {"train": ds}, {"setup": setup, "teachers": pool},
                          lambda result: export_and_score(cfg, result, setup, rows, kind, started), out,
                          release=lambda: [ray.kill(actor) for actor in pool])
    print(f"[distill] student eval loss {metrics['eval_loss']:.3f}, score {metrics['eval_score']}; saved to {out}")
    return metrics


def export_and_score(cfg: RaykdConfig, result, setup: DistillSetup, rows: list[dict], kind: str, started: float
                     ) -> dict:
    """Export the student to ``RUN/<distill.output>``, score it, write its ``metrics.json``; return the metrics."""
    out, d = cfg.stage_dir(cfg.distill.output), cfg.distill
    loop = result.return_value
    params = export_checkpoint(functools.partial(build_student, cfg, None, teacher=setup.teacher), cfg.models.student,
                               result.checkpoint, setup.tokenizer, str(out), cfg.models, cfg.distill)
    final = ray.get(score_task.remote(cfg.to_dict(), str(out), str(out), rows, kind))
    metrics = {
        "steps": loop["step"], "resumed_from_step": loop["resumed_from"],
        "train_loss_first": loop["losses"][0], "train_loss_last": loop["losses"][-1],
        "eval_loss": final["loss"], "eval_score": final["score"], "params": params,
        "tokens_per_s": loop["tokens"] / max(1e-9, loop["seconds"]), "train_s": loop["seconds"],
        "teacher_source": cfg.distill.teacher_source, "data_source": setup.source,
        "teacher_forward_passes": loop["teacher_forward_passes"], "on_policy_fraction": d.on_policy_fraction,
        "on_policy_batches": loop["on_policy_batches"], "generated_tokens": loop["generated_tokens"],
        "alpha": d.alpha, "temperature": d.temperature, "loss": d.loss, "jsd_beta": d.jsd_beta,
        "wall_s": time.time() - started,
    }
    write_metrics(out, metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    cfg = parse_stage_args(argv, __doc__.splitlines()[0], STAGES["distill"].reads)
    run_stage("distill", run, cfg, precheck=check_student)


if __name__ == "__main__":
    main()
