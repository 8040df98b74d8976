"""Memory and storage formulas of ``raykd plan``: per-GPU training memory, vLLM engines, the teacher cache.

Every figure is in bytes and follows what raykd's code does (read in raykd/models/load.py, raykd/training/):

- Models load in fp32 (``load_model``'s default) and train under ``torch.autocast(bfloat16)`` when bf16 is
  on: the fp32 weights *are* the master copy (no separate one), and autocast makes a bf16 copy of each
  linear weight it multiplies. Autograd keeps those copies for backward, and autocast's cast cache keeps
  the copies of trainable weights until it exits (after backward); under FSDP2 too, the copies are of
  the *gathered* weights, so they are not sharded (tests/raykd/plan/test_planner.py measures the peak).
- FSDP2 (``fully_shard`` per block, then the root) shards weights, gradients and AdamW's two fp32
  moments over the workers; it gathers one block at a time (plus the next, prefetched) and keeps the
  root's own parameters (embeddings, final norm, LM head) gathered through forward and backward. With
  bf16 on, its ``MixedPrecisionPolicy`` gathers the weights in bf16 (``raykd.models.load.fully_shard_model``):
  autocast then finds them already bf16 and copies nothing.
- Loading: under FSDP2 over several workers each worker reads only its rows of every weight into its
  shards (``raykd.models.sharded_load``); DDP and single workers load the whole fp32 model (``load_bytes``).

The per-token activation coefficients were measured with ``torch.autograd.graph.saved_tensors_hooks`` on
transformers' Llama with SDPA attention (no seq x seq term) and are re-measured by tests/raykd/plan/test_planner.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from raykd.config import VLLMConfig
from raykd.plan.arch import ModelShape

GIB = 1 << 30
FP32, BF16 = 4, 2
ADAM_BYTES = 8  # AdamW's exp_avg and exp_avg_sq, fp32 each, per trainable parameter
CUDA_RESERVE_GIB = 2.0  # CUDA context, NCCL buffers, allocator slack: a round figure, not measured
VLLM_RESERVE_GIB = 2.0  # vLLM's profiled activation peak and CUDA graphs: a round figure, not measured
# Peak (tokens, vocab) fp32-sized temporaries of a loss:
HF_LOSS_COPIES = 4  # HF's causal-LM loss: logits, their fp32 upcast, log-softmax, its gradient
FUSED_LOSS_COPIES = 5  # raykd.losses.fused_distillation_loss on one chunk, forward + recomputed backward, at
# its first call's peak (one-time buffers included); tests/raykd/plan/test_planner.py re-measures it


def block_activation_bytes(shape: ModelShape, bf16: bool) -> int:
    """Saved-for-backward bytes of one decoder block per token (measured, see the module docstring):
    bf16 autocast ``30 h + 8 f + 4 kv + 4 heads`` (fp32 residual stream and norms, bf16 linear inputs
    and attention tensors, fp32 attention log-sum-exp); fp32 ``32 h + 16 f + 8 kv + 4 heads``.
    ``h`` hidden, ``f`` MLP width, ``kv`` key/value width. Weight copies are counted apart."""
    h, f, kv, heads = shape.hidden, shape.intermediate, shape.kv_dim, shape.heads
    return 30 * h + 8 * f + 4 * kv + 4 * heads if bf16 else 32 * h + 16 * f + 8 * kv + 4 * heads


@dataclass(frozen=True)
class TrainSetup:
    """One training process's share of a run (a Ray Train worker, or a Tune trial)."""

    workers: int
    sharding: str  # fsdp, ddp or none
    bf16: bool
    tokens: int  # per micro-batch on this worker: batch_size * max_seq_len
    trainable: int  # trainable parameters (all, or LoRA's)
    trainable_linear: int  # of those, weights of linear layers (autocast copies them)
    loss_tokens: int  # tokens whose full-vocabulary logits are alive at once
    loss_copies: int  # (loss_tokens, vocab) fp32-sized temporaries at the loss's peak
    activation_checkpointing: bool = False
    on_gpu: bool = True


def training_memory(m: ModelShape, s: TrainSetup, online_teacher: ModelShape | None = None) -> dict[str, int]:
    """Peak bytes per worker, by term. With ``W`` the FSDP world (1 without fsdp), ``P`` all and ``T``
    trainable parameters, ``L`` layers, ``n`` tokens per micro-batch:

    - weights ``4 P / W``; gradients ``4 T / W``; AdamW ``8 T / W`` (fp32 each);
    - gathered by FSDP2: ``4 (P - P_blocks)`` (the root) ``+ 2 * 4 P_blocks / L`` (a block and the next),
      half that with bf16 (mixed precision gathers bf16); DDP keeps a second copy of the gradients in its
      buckets (``4 T``);
    - autocast's bf16 weight copies (bf16 without FSDP2): ``2 T_linear`` (cached trainable ones) plus
      ``2 F_linear`` of the frozen ones (``2 F_linear / L`` with activation checkpointing: only the
      recomputed block's);
    - activations: ``L n a`` (``a`` = ``block_activation_bytes``); with per-block activation
      checkpointing ``4 L n h`` (one fp32 hidden state saved per block) ``+ 2 n a`` (one block's
      recomputed activations and their gradients);
    - loss: ``4 * copies * n_loss * V`` (full logits for HF's loss, one chunk for the fused KD loss);
    - an online teacher: its fp32 weights ``4 P_t`` and logits ``4 n V``; on GPUs ``CUDA_RESERVE_GIB``.
    """
    world = s.workers if s.sharding == "fsdp" else 1
    frozen_linear = m.linear_params - s.trainable_linear
    per_block = m.block_params // max(1, m.layers)
    act = block_activation_bytes(m, s.bf16)
    terms = {
        "weights": FP32 * m.params // world,
        "gradients": FP32 * s.trainable // world,
        "adamw": ADAM_BYTES * s.trainable // world,
        "gathered": ((BF16 if s.bf16 else FP32) * (m.params - m.block_params + 2 * per_block) if world > 1 else 0)
        + (FP32 * s.trainable if s.sharding == "ddp" and s.workers > 1 else 0),
        "bf16_copies": BF16 * (s.trainable_linear + (frozen_linear // m.layers if s.activation_checkpointing
                                                     else frozen_linear)) if s.bf16 and world == 1 else 0,
        "activations": (FP32 * m.layers * s.tokens * m.hidden + 2 * s.tokens * act) if s.activation_checkpointing
        else m.layers * s.tokens * act,
        "loss": FP32 * s.loss_copies * s.loss_tokens * m.vocab,
    }
    if online_teacher is not None:
        terms["online_teacher"] = FP32 * (online_teacher.params + s.tokens * online_teacher.vocab)
    terms["reserve"] = int(CUDA_RESERVE_GIB * GIB) if s.on_gpu else 0
    return terms


def load_bytes(m: ModelShape, sharding: str, workers: int) -> int:
    """fp32 weight bytes one device holds while a training worker loads its model: FSDP2 over several
    workers, its shard (``raykd.models.sharded_load`` reads only its rows from the files, into shards laid out on
    the meta device); otherwise the whole model."""
    return FP32 * m.params // (workers if sharding == "fsdp" and workers > 1 else 1)


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype name (float32, bfloat16, float16)."""
    return FP32 if dtype == "float32" else BF16


@dataclass(frozen=True)
class EngineFit:
    """A vLLM engine on ``tensor_parallel`` GPUs: per-GPU bytes and the KV cache's token capacity."""

    weights_per_gpu: int
    kv_per_gpu: int
    per_gpu: int  # what the engine takes of each GPU
    kv_tokens: int  # tokens of context the KV cache holds, all GPUs together
    context: int  # max_model_len the engine must hold at least once

    @property
    def fits(self) -> bool:
        return self.kv_per_gpu > 0 and self.kv_tokens >= self.context


def vllm_engine(m: ModelShape, v: VLLMConfig, weight_bytes: int, gpu_gib: float) -> EngineFit:
    """vLLM with ``v``: weights ``P * bytes / TP`` per GPU; the KV cache gets ``kv_cache_gib`` per GPU,
    or else what ``gpu_memory_utilization * GPU`` leaves after weights and ``VLLM_RESERVE_GIB``. Its
    capacity is ``TP * kv_per_gpu / (2 L kv bytes)`` tokens (each GPU holds 1/TP of the KV heads), and
    vLLM refuses to start unless it holds one ``max_model_len`` (0 = the model's own) sequence."""
    tp, reserve = v.tensor_parallel, int(VLLM_RESERVE_GIB * GIB)
    weights = m.params * weight_bytes // tp
    if v.kv_cache_gib:
        kv = int(v.kv_cache_gib * GIB)
        per_gpu = weights + kv + reserve
    else:
        per_gpu = int(v.gpu_memory_utilization * gpu_gib * GIB)
        kv = per_gpu - weights - reserve
    tokens = max(0, kv) * tp // m.kv_bytes_per_token(weight_bytes)
    return EngineFit(weights, kv, per_gpu, tokens, v.max_model_len or m.max_positions)


def hf_engine_bytes(m: ModelShape, gpus: float, batch: int, seq: int, logits: bool) -> int:
    """A transformers engine's bytes on its busiest device: fp32 weights on one device, or bf16 weights
    spread over ``gpus > 1`` (``device_map=auto``, as raykd.cache.scorer loads a big teacher), plus
    the batch's KV cache at the weights' dtype and, when scoring (``logits``), its full logits (model
    dtype + the fp32 copy: ``(batch, seq, V)``)."""
    wbytes = BF16 if gpus > 1 else FP32
    weights = m.params * wbytes // (int(gpus) if gpus > 1 else 1)
    kv = batch * seq * m.kv_bytes_per_token(wbytes)
    return weights + kv + (batch * seq * m.vocab * (wbytes + FP32) if logits else 0)


def cache_bytes_per_row(seq: int, k: int, vocab: int, tail_samples: int, tail_temperatures: int,
                        causal: bool, targets: int | None = None) -> int:
    """Uncompressed bytes of one cached row (raykd/cache/schema.py): input_ids, attention_mask and
    labels (int64, ``S`` each; a classifier's label is one int64) plus, per stored target position
    (``targets``, at most ``S`` for a causal LM — the default, an upper bound; 1 for a classifier), ``k``
    fp16 values + ``k`` indices (int16 when the vocabulary fits, else int32) and, for the transformers
    engine (``tail_samples > 0``), ``m`` fp16 tail values + ``m`` indices + ``G`` fp32 tail log-sum-exps."""
    index = 2 if vocab <= 32767 else 4
    per_position = k * (2 + index) + tail_samples * (2 + index) + (4 * tail_temperatures if tail_samples else 0)
    positions = (seq if targets is None else targets) if causal else 1
    return 8 * (2 * seq + (seq if causal else 1)) + positions * per_position
