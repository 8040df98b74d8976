"""Load and save Hugging Face models, the built-in presets, LoRA, and sharding (FSDP2 / DDP)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedModel,
)

from raykd.builtin.presets import TOKENIZER_DIR, builtin_model_dir, preset_config
from raykd.config import FinetuneConfig, ModelsConfig


def resolve_model(spec: str) -> str:
    """A loadable path or hub id for ``builtin:NAME``, an HF directory or a hub id."""
    if spec.startswith("builtin:"):
        return str(builtin_model_dir(spec.split(":", 1)[1]))
    return spec


def resolve_tokenizer(models: ModelsConfig) -> str:
    """Path or hub id of the tokenizer: the built-in one, or the configured one."""
    return str(TOKENIZER_DIR) if models.tokenizer == "builtin" else models.tokenizer


def load_model(spec: str, task: str, num_labels: int, trust_remote_code: bool = False,
               dtype: torch.dtype = torch.float32, device_map: str | None = None) -> PreTrainedModel:
    """A causal LM or sequence classifier from a preset (``tiny:NAME``), ``builtin:NAME`` or HF dir.

    A classifier loaded from a causal-LM base keeps the backbone and gets a fresh ``score`` head.
    ``device_map="auto"`` spreads an inference-only model over the GPUs a process was given.
    """
    if spec.startswith("tiny:"):
        config = preset_config(spec.split(":", 1)[1])
        if task == "sequence_classification":
            config.num_labels = num_labels
            return LlamaForSequenceClassification(config).to(dtype)
        return LlamaForCausalLM(config).to(dtype)
    path = resolve_model(spec)
    if task == "sequence_classification":
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, dtype=dtype, trust_remote_code=trust_remote_code, device_map=device_map)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                device_map=device_map)


def add_lora(model: PreTrainedModel, ft: FinetuneConfig, task: str) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters; a classifier's head stays fully trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        r=ft.lora_r, lora_alpha=ft.lora_alpha, lora_dropout=ft.lora_dropout,
        target_modules=list(ft.lora_targets),
        task_type=TaskType.SEQ_CLS if task == "sequence_classification" else TaskType.CAUSAL_LM,
    )
    return get_peft_model(model, lora)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder blocks (``...model.layers`` for Llama-family models)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layers", "h", "blocks"):
            return module
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__} to shard")


def shard_model(model: nn.Module, strategy: str, device: torch.device, world_size: int) -> nn.Module:
    """Place ``model`` on ``device`` and wrap it for data parallelism.

    fsdp: FSDP2 ``fully_shard`` per decoder block, then the root (parameters become DTensors sharded
    across ranks); ddp: replicated weights, all-reduced gradients; none: as is (one worker).
    """
    model.to(device)
    if strategy == "none" or world_size == 1:
        return model
    if strategy == "ddp":
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    for block in decoder_layers(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


class ForwardCounter:
    """Calls a frozen teacher and counts its forward passes (a sweep on the cache must make none)."""

    def __init__(self, model: nn.Module):
        self.model, self.calls = model, 0

    def __call__(self, **inputs):
        self.calls += 1
        return self.model(**inputs)


def count_params(model: nn.Module) -> int:
    """Parameters of a (non-sharded) model, tied weights counted once."""
    return sum(p.numel() for p in model.parameters())


def save_model(model: nn.Module, tokenizer_path: str, out_dir: str, dtype: str,
               trust_remote_code: bool = False) -> int:
    """Save a standard HF directory (weights, config, tokenizer) that transformers and vLLM load.

    A peft model keeps its adapter under ``out_dir/adapter`` and is saved merged. Returns the saved
    model's parameter count.
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    if isinstance(model, PeftModel):
        model.save_pretrained(f"{out_dir}/adapter")
        model = model.merge_and_unload()
    model.to(getattr(torch, dtype)).save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(tokenizer_path, trust_remote_code=trust_remote_code).save_pretrained(out_dir)
    return count_params(model)


def keep_layers(model: PreTrainedModel, layer_ids: list[int]) -> PreTrainedModel:
    """Shrink ``model`` to the given decoder blocks (a student initialised from its teacher)."""
    blocks = decoder_layers(model)
    if not layer_ids or any(not 0 <= i < len(blocks) for i in layer_ids):
        raise ValueError(f"layer ids {layer_ids} must be within [0, {len(blocks) - 1}]")
    kept = nn.ModuleList(blocks[i] for i in layer_ids)
    for new_index, block in enumerate(kept):
        if hasattr(getattr(block, "self_attn", None), "layer_idx"):
            block.self_attn.layer_idx = new_index  # the KV cache is indexed by position in the stack
    parent_name, attribute = next(n for n, m in model.named_modules() if m is blocks).rsplit(".", 1)
    setattr(model.get_submodule(parent_name), attribute, kept)
    model.config.num_hidden_layers = len(layer_ids)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in layer_ids]
    return model
