"""Stage 3: distil the student from the cached teacher logits as a Ray Train ``TorchTrainer`` job.

    raykd distill --config configs/demo.yaml
    python -m ray_jobs.distill_student --config configs/demo.yaml distill.alpha=1.0 distill.temperature=4
    ray job submit --working-dir . -- python -m ray_jobs.distill_student --config configs/llama70b_to_7b.yaml

Loss: ``alpha * T**2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)`` per valid token
(``ray_jobs.losses``). ``distill.teacher_source``: ``cache`` reads ``RUN/teacher_cache`` (object store,
else Parquet); ``online`` runs the teacher's forward pass in every step (the textbook baseline that
caching is measured against); ``none`` trains on ``data.train``'s hard labels only (alpha=0, the
no-teacher baseline). Writes ``RUN/<distill.output>/`` (HF directory) and its ``metrics.json``.
"""

from __future__ import annotations

import time

import ray
import ray.train
import torch

from ray_jobs import teacher_cache
from ray_jobs.config import ConfigError, RaykdConfig, from_dict
from ray_jobs.data import cached_tokenizer, tokenized_dataset
from ray_jobs.finetune_teacher import eval_rows
from ray_jobs.launch import parse_stage_args, run_stage, write_metrics
from ray_jobs.losses import distillation_loss
from ray_jobs.models import ForwardCounter, keep_layers, load_model, save_model, shard_model
from ray_jobs.scoring import score_task
from ray_jobs.training import (
    EvalFn,
    Session,
    build_from_latest,
    load_trainable,
    make_optimizer,
    micro_batches,
    restore_checkpoint,
    run_steps,
    train_session,
    trainer_for,
    worker_device,
)

TEACHER_COLUMNS = ("values", "indices", "lse")


def teacher_path(cfg: RaykdConfig) -> str:
    return cfg.cache.teacher or str(cfg.stage_dir("teacher"))


def build_student(cfg: RaykdConfig, checkpoint_dir: str | None = None) -> torch.nn.Module:
    """The student base (HF dir, preset, or blocks of the teacher), with checkpoint weights if given."""
    torch.manual_seed(cfg.seed)
    spec = cfg.models.student
    if spec.startswith("teacher-layers:"):
        ids = [int(i) for i in spec.split(":", 1)[1].split(",")]
        model = keep_layers(load_model(teacher_path(cfg), cfg.task, cfg.data.num_labels), ids)
    else:
        model = load_model(spec, cfg.task, cfg.data.num_labels, cfg.models.trust_remote_code)
    if checkpoint_dir is not None:
        model.load_state_dict(load_trainable(checkpoint_dir), strict=False)
    return model


def student_positions(logits: torch.Tensor, batch: dict, task: str) -> tuple[torch.Tensor, dict]:
    """Align student logits with targets and flatten: ``(B, S, V)`` → ``(n, V)`` plus the batch's
    labels and teacher columns, all ``(n, ...)``. Causal LM: position j-1 predicts token j."""
    if task == "sequence_classification":
        logits, targets = logits[:, None, :], batch
    else:
        logits, targets = logits[:, :-1], {k: v[:, 1:] for k, v in batch.items() if k != "input_ids"}
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in targets.items() if k in ("labels", *TEACHER_COLUMNS)}
    return logits.reshape(-1, logits.shape[-1]), flat


def make_loss_fn(cfg: RaykdConfig, vocab: int, teacher: ForwardCounter | None):
    """``loss_fn(model, batch) -> loss`` for the configured teacher source (``distill.top_k`` > 0 keeps
    only the first k of the cached logits, which are sorted by value)."""
    d = cfg.distill

    def loss_fn(model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :vocab]
        flat_logits, flat = student_positions(logits, batch, cfg.task)
        if teacher is not None:
            with torch.no_grad():
                t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :vocab]
            signal = {"logits": student_positions(t, batch, cfg.task)[0]}
        else:
            signal = {k: flat[k] for k in TEACHER_COLUMNS if k in flat}
            if d.top_k and signal:
                signal |= {k: signal[k][:, : d.top_k] for k in ("values", "indices")}
        return distillation_loss(flat_logits, flat["labels"], signal, d.alpha if signal else 0.0, d.temperature,
                                 d.chunk_tokens)["loss"]

    return loss_fn


def fit_student(cfg: RaykdConfig, vocab: int, data, session: Session, evaluate: EvalFn | None = None) -> dict:
    """Distil a student from ``data`` (a Train shard or a whole dataset) under ``session``: build or
    resume, shard, train to ``distill.steps``. Shared by the Train job and every Ray Tune trial.

    Every report carries ``teacher_forward_passes`` (this process's count; 0 on the cache) and
    ``evaluate``'s metrics. Returns the loop state plus that count.
    """
    device = worker_device(cfg.distill, session)
    model = build_from_latest(lambda checkpoint_dir: build_student(cfg, checkpoint_dir), session)
    teacher = None
    if cfg.distill.teacher_source == "online":
        frozen = load_model(teacher_path(cfg), cfg.task, cfg.data.num_labels).to(device).eval().requires_grad_(False)
        teacher = ForwardCounter(frozen)
    trainable = {n for n, _ in model.named_parameters()}
    model = shard_model(model, cfg.distill.sharding, device, session.world)
    optimizer, scheduler = make_optimizer(model.parameters(), cfg.distill)
    state = restore_checkpoint(model, optimizer, session)

    def forwards() -> int:
        return teacher.calls if teacher else 0

    def report_extra(model, final: bool) -> dict:
        return {"teacher_forward_passes": forwards()} | (evaluate(model, final) if evaluate else {})

    state = run_steps(model, optimizer, scheduler, micro_batches(data, cfg.distill.batch_size),
                      make_loss_fn(cfg, vocab, teacher), cfg.distill, state, trainable, device, "distill", session,
                      report_extra)
    return state.__dict__ | {"teacher_forward_passes": forwards()}


def train_loop(config: dict) -> dict:
    """Per-worker loop of the Train job."""
    cfg = from_dict(config["cfg"])
    return fit_student(cfg, config["vocab"], ray.train.get_dataset_shard("train"), train_session())


@ray.remote
def export_task(cfg_dict: dict, checkpoint: ray.train.Checkpoint, out_dir: str, tokenizer_dir: str) -> int:
    """Rebuild the trained student from a checkpoint and save it as an HF directory; returns its params."""
    cfg = from_dict(cfg_dict)
    with checkpoint.as_directory() as d:
        model = build_student(cfg, d)
    return save_model(model, tokenizer_dir, out_dir, cfg.models.save_dtype, cfg.models.trust_remote_code)


def check_top_k(key: str, k: int, manifest: teacher_cache.CacheManifest, cache_dir) -> None:
    """Refuse asking for more cached logits per token than the cache holds."""
    if k > manifest.k:
        raise ConfigError(f"'{key}' asks for {k} logits per token but the cache in {cache_dir} holds only "
                          f"{manifest.k} (re-run `raykd cache` with a larger cache.top_k)")


def training_data(cfg: RaykdConfig) -> tuple[ray.data.Dataset, int, str, str]:
    """(dataset, vocabulary, tokenizer dir, where the data came from) for the teacher source."""
    if cfg.distill.teacher_source == "none":
        from ray_jobs.models import resolve_tokenizer

        tokenizer = resolve_tokenizer(cfg.models)
        vocab = len(cached_tokenizer(tokenizer)) if cfg.task == "causal_lm" else cfg.data.num_labels
        return tokenized_dataset(cfg.data.train, cfg.data, cfg.task, tokenizer), vocab, tokenizer, "data.train"
    cache_dir = cfg.stage_dir("teacher_cache")
    ds, manifest, source = teacher_cache.load(cache_dir)
    teacher_cache.check_compatible(manifest, teacher_path(cfg), teacher_path(cfg), cache_dir)
    check_top_k("distill.top_k", cfg.distill.top_k, manifest, cache_dir)
    if cfg.distill.teacher_source == "online":
        ds = ds.drop_columns(list(TEACHER_COLUMNS))
    return ds, manifest.vocab_size, teacher_path(cfg), source


def check_student(cfg: RaykdConfig, vocab: int) -> None:
    """Refuse, before any training, a student spec that cannot load or cannot share the teacher's
    tokenizer (a student vocabulary may be padded beyond the tokenizer's, never smaller)."""
    from transformers import AutoConfig

    from ray_jobs.models import resolve_model
    from ray_jobs.presets import preset_config

    spec = cfg.models.student
    try:
        if spec.startswith("tiny:"):
            config = preset_config(spec.split(":", 1)[1])
        elif spec.startswith("teacher-layers:"):
            config = AutoConfig.from_pretrained(teacher_path(cfg))
            ids = [int(i) for i in spec.split(":", 1)[1].split(",")]
            if not ids or not all(0 <= i < config.num_hidden_layers for i in ids):
                raise ValueError(f"layer ids must be within [0, {config.num_hidden_layers - 1}]")
        else:
            config = AutoConfig.from_pretrained(resolve_model(spec), trust_remote_code=cfg.models.trust_remote_code)
    except (ValueError, OSError) as e:
        raise ConfigError(f"models.student={spec}: {str(e).splitlines()[0]}") from None
    if cfg.task == "causal_lm" and config.vocab_size < vocab:
        raise ConfigError(f"models.student={spec} has vocab_size {config.vocab_size} < the teacher's tokenizer "
                          f"({vocab}): teacher and student must share a tokenizer")


def run(cfg: RaykdConfig) -> dict:
    """Distil the student; returns the metrics."""
    started = time.time()
    out = cfg.stage_dir(cfg.distill.output)
    ds, vocab, tokenizer_dir, source = training_data(cfg)
    check_student(cfg, vocab)
    rows, kind = eval_rows(cfg)
    print(f"[distill] {ds.count()} rows from {source}; teacher source {cfg.distill.teacher_source}, "
          f"alpha {cfg.distill.alpha}, T {cfg.distill.temperature}")
    trainer = trainer_for(cfg, cfg.distill, f"distill-{cfg.distill.output}", train_loop, {"train": ds},
                          extra={"vocab": vocab})
    result = trainer.fit()
    loop = result.return_value
    cfg_dict = cfg.to_dict()
    params = ray.get(export_task.remote(cfg_dict, result.checkpoint, str(out), tokenizer_dir))
    final = ray.get(score_task.remote(cfg_dict, str(out), str(out), rows, kind))
    metrics = {
        "steps": loop["step"], "resumed_from_step": loop["resumed_from"],
        "train_loss_first": loop["losses"][0], "train_loss_last": loop["losses"][-1],
        "eval_loss": final["loss"], "eval_score": final["score"], "params": params,
        "tokens_per_s": loop["tokens"] / max(1e-9, loop["seconds"]), "train_s": loop["seconds"],
        "teacher_source": cfg.distill.teacher_source, "data_source": source,
        "teacher_forward_passes": loop["teacher_forward_passes"],
        "alpha": cfg.distill.alpha, "temperature": cfg.distill.temperature, "wall_s": time.time() - started,
    }
    write_metrics(out, metrics)
    print(f"[distill] student eval loss {final['loss']:.3f}, score {final['score']}; saved to {out}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    cfg = parse_stage_args(argv, __doc__.splitlines()[0])
    run_stage(run, cfg)


if __name__ == "__main__":
    main()
