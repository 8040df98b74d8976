"""Load and save Hugging Face models, the built-in presets, LoRA, and sharding (FSDP2 / DDP)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedModel,
)

from raykd.builtin.presets import TOKENIZER_DIR, builtin_model_dir, preset_config
from raykd.config import ConfigError, FinetuneConfig, ModelsConfig, RaykdConfig
from raykd.data.tokens import load_tokenizer


def resolve_model(spec: str) -> str:
    """A loadable path or hub id for ``builtin:NAME``, an HF directory or a hub id."""
    if spec.startswith("builtin:"):
        return str(builtin_model_dir(spec.split(":", 1)[1]))
    return spec


def resolve_tokenizer(models: ModelsConfig) -> str:
    """Path or hub id of the tokenizer. ``auto``: the teacher's own (the built-in tokenizer for
    ``builtin:`` and ``tiny:`` teachers); ``builtin``; or the configured directory / hub id."""
    if models.tokenizer == "auto":
        builtin = models.teacher.startswith(("builtin:", "tiny:"))
        return str(TOKENIZER_DIR) if builtin else resolve_model(models.teacher)
    return str(TOKENIZER_DIR) if models.tokenizer == "builtin" else models.tokenizer


def load_model(spec: str, task: str, num_labels: int, trust_remote_code: bool = False,
               dtype: torch.dtype = torch.float32, device_map: str | None = None,
               pad_token_id: int | None = None, weights: bool = True) -> PreTrainedModel:
    """A causal LM or sequence classifier from a preset (``tiny:NAME``), ``builtin:NAME`` or HF dir.

    A classifier loaded from a causal-LM base keeps the backbone and gets a fresh ``score`` head; a
    decoder classifier finds each row's last token by the pad id, so one without a ``pad_token_id``
    gets the tokenizer's (``pad_token_id``). ``device_map="auto"`` spreads an inference-only model
    over the GPUs a process was given. ``weights=False`` constructs the architecture from its config
    without reading weights (under ``torch.device("meta")`` or ``sharded_load.parameters_on_meta``).
    """
    classifier = task == "sequence_classification"
    if spec.startswith("tiny:"):
        config = preset_config(spec.split(":", 1)[1])
        if classifier:
            config.num_labels = num_labels
            return LlamaForSequenceClassification(config).to(dtype)
        return LlamaForCausalLM(config).to(dtype)
    path = resolve_model(spec)
    auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    labels = {"num_labels": num_labels} if classifier else {}
    if weights:
        model = auto.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code, device_map=device_map,
                                     **labels)
    else:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **labels)
        model = auto.from_config(config, trust_remote_code=trust_remote_code).to(dtype)
    if classifier and model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    return model


def model_skeleton(spec: str, task: str, num_labels: int, trust_remote_code: bool = False) -> PreTrainedModel:
    """The architecture of a model spec without its weights (on the meta device), for checks that must
    not load a big model; a spec that cannot be read is a ConfigError naming it."""
    try:
        with torch.device("meta"):
            return load_model(spec, task, num_labels, trust_remote_code, weights=False)
    except (ValueError, OSError) as e:
        raise ConfigError(f"{spec}: cannot read a model config: {str(e).splitlines()[0][:200]}") from None


def load_configured(spec: str, cfg: RaykdConfig, **kwargs) -> PreTrainedModel:
    """``load_model`` with the config's task, classes, ``trust_remote_code`` and tokenizer pad id."""
    pad = load_tokenizer(resolve_tokenizer(cfg.models), cfg.models.trust_remote_code).pad_token_id
    return load_model(spec, cfg.task, cfg.data.num_labels, cfg.models.trust_remote_code, pad_token_id=pad, **kwargs)


def add_lora(model: PreTrainedModel, ft: FinetuneConfig, task: str) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters; a classifier's head stays fully trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        r=ft.lora_r, lora_alpha=ft.lora_alpha, lora_dropout=ft.lora_dropout,
        target_modules=lora_target_modules(model, ft.lora_target_modules),
        task_type=TaskType.SEQ_CLS if task == "sequence_classification" else TaskType.CAUSAL_LM,
    )
    return get_peft_model(model, lora)


# Standard LoRA targets (query and value projections) where an architecture has them.
QUERY_VALUE_PAIRS = (("q_proj", "v_proj"), ("query", "value"))


def _linear_leaves(model: nn.Module) -> tuple[set[str], set[str]]:
    """Leaf names of linear layers inside attention modules, and of those elsewhere."""
    from transformers.pytorch_utils import Conv1D

    inside, outside = set(), set()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, Conv1D)):
            *parents, leaf = name.split(".")
            in_attention = any("attn" in p.lower() or "attention" in p.lower() for p in parents)
            (inside if in_attention else outside).add(leaf)
    return inside, outside


def _block_linears(model: nn.Module) -> list[str]:
    """Qualified names of every linear layer inside the transformer blocks (attention and MLP; not
    the embeddings, the LM head, a classifier head or BERT's pooler, whose leaf names may recur)."""
    from transformers.pytorch_utils import Conv1D

    blocks = transformer_blocks(model)
    prefix = next(name for name, module in model.named_modules() if module is blocks) + "."
    return [name for name, module in model.named_modules()
            if name.startswith(prefix) and isinstance(module, (nn.Linear, Conv1D))]


def lora_target_modules(model: nn.Module, requested: list[str]) -> list[str]:
    """LoRA targets for ``model``. ``["auto"]``: the attention projections of its architecture —
    query + value where it has them (Llama, Qwen2, Mistral, Phi: ``q_proj``/``v_proj``; BERT:
    ``query``/``value``), else the linear layers found only inside attention (GPT-2: ``c_attn``).
    ``["all-linear"]``: every linear layer of the transformer blocks, by qualified name.
    An explicit list must match existing modules; a name that matches none raises ConfigError."""
    if list(requested) == ["all-linear"]:
        return _block_linears(model)
    inside, outside = _linear_leaves(model)
    if list(requested) == ["auto"]:
        only_attention = sorted(inside - outside)
        for pair in QUERY_VALUE_PAIRS:
            if set(pair) <= set(only_attention):
                return list(pair)
        if not only_attention:
            raise ConfigError(f"finetune.lora_target_modules=auto: no attention projections found in "
                              f"{type(model).__name__}; set finetune.lora_target_modules to some of: "
                              f"{', '.join(sorted(inside | outside))}")
        return only_attention
    unknown = [m for m in requested if m not in inside | outside]
    if unknown:
        raise ConfigError(f"finetune.lora_target_modules: {', '.join(unknown)} match no module of "
                          f"{type(model).__name__}; its linear layers are: {', '.join(sorted(inside | outside))}")
    return list(requested)


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer blocks (decoder or encoder layers): the ModuleList of the class
    the model names in ``_no_split_modules`` (Llama, Qwen2, Mistral, Phi, GPT-2, ...), else the
    largest ModuleList of identical modules (BERT's ``encoder.layer``)."""
    unsplit = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    stacks = [m for m in model.modules()
              if isinstance(m, nn.ModuleList) and len(m) and len({type(block) for block in m}) == 1]
    for stack in stacks:
        if type(stack[0]).__name__ in unsplit:
            return stack
    if stacks:
        return max(stacks, key=lambda stack: sum(p.numel() for p in stack.parameters()))
    raise ValueError(f"cannot find the transformer blocks of {type(model).__name__}")


def shard_model(model: nn.Module, strategy: str, device: torch.device, world_size: int,
                activation_checkpointing: bool = False, bf16: bool = False) -> nn.Module:
    """Wrap ``model`` for data parallelism on ``device``.

    fsdp: ``fully_shard_model`` (each block's weights move to the device as they are sharded, never the
    whole model at once); ddp: replicated weights, all-reduced gradients; none: as is (one worker).
    ``activation_checkpointing``: each block keeps only its input for backward and recomputes the rest
    (``checkpoint_blocks``), under any strategy.
    """
    if strategy == "fsdp" and world_size > 1:
        fully_shard_model(model, device, world_size, activation_checkpointing, bf16)
        return model
    model.to(device)
    if activation_checkpointing:
        checkpoint_blocks(model)
    if strategy == "ddp" and world_size > 1:
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def fully_shard_model(model: nn.Module, device: torch.device, world_size: int, activation_checkpointing: bool,
                      bf16: bool) -> None:
    """FSDP2: ``fully_shard`` per transformer block, then the root (parameters become DTensors sharded
    across ranks). ``bf16``: FSDP2's mixed precision — bf16 weights gathered and computed with, gradients
    reduced in fp32, fp32 shards kept as the master copy."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if activation_checkpointing:
        checkpoint_blocks(model)
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
              else MixedPrecisionPolicy())
    mesh = init_device_mesh(device.type, (world_size,))
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def checkpoint_blocks(model: nn.Module) -> None:
    """Per-block activation checkpointing with torch's composable ``checkpoint`` (non-reentrant): it
    works through hooks, so parameter names — what checkpoints, LoRA merging and export key on — stay
    as they are, and it composes with ``fully_shard`` applied after it.

    Forward passes without an explicit ``use_cache`` stop building a KV cache: a recomputed block would
    append its keys and values to the forward's cache a second time (a padded batch then fails; an
    unpadded one silently attends over the copy). ``generate()`` asks for its cache explicitly.
    """
    from torch.distributed._composable import checkpoint

    if getattr(model, "config", None) is not None and hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    for block in transformer_blocks(model):
        checkpoint(block)


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

    if isinstance(model, PeftModel):
        model.save_pretrained(f"{out_dir}/adapter")
        model = model.merge_and_unload()
    model.to(getattr(torch, dtype)).save_pretrained(out_dir)
    load_tokenizer(tokenizer_path, trust_remote_code).save_pretrained(out_dir)
    return count_params(model)


def keep_layers(model: PreTrainedModel, layer_ids: list[int]) -> PreTrainedModel:
    """Shrink ``model`` to the given decoder blocks (a student initialised from its teacher)."""
    blocks = transformer_blocks(model)
    if not layer_ids or any(not 0 <= i < len(blocks) for i in layer_ids):
        raise ValueError(f"layer ids {layer_ids} must be within [0, {len(blocks) - 1}]")
    kept = nn.ModuleList(blocks[i] for i in layer_ids)
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index  # the KV cache is indexed by position in the stack
    parent_name, attribute = next(n for n, m in model.named_modules() if m is blocks).rsplit(".", 1)
    setattr(model.get_submodule(parent_name), attribute, kept)
    model.config.num_hidden_layers = len(layer_ids)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in layer_ids]
    return model
