"""A model spec's architecture without its weights: its config, a meta-device model, and its shape.

``raykd plan`` sizes stages from these, so nothing is downloaded and no weight is loaded. A spec is
resolved, in order, as ``tiny:NAME`` (a preset), ``builtin:NAME`` (the shipped directory's config.json,
i.e. exactly what loads), ``teacher-layers:IDS`` (the teacher's config with those blocks), a local HF
directory (its config.json), or a hub id of a bundled architecture (``raykd/builtin/arch/``: config.json
files written from the published architecture numbers). Anything else is a ConfigError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, PretrainedConfig

from raykd.builtin.presets import builtin_model_dir, preset_config
from raykd.config import ConfigError

ARCH_DIR = Path(__file__).parents[1] / "builtin" / "arch"

# Hub ids (lower-cased) -> bundled architecture. Chat/Instruct variants share their base's shapes
# (they differ in eos ids only), so they map to the same file.
HUB_ARCHITECTURES = {
    **dict.fromkeys(["meta-llama/llama-2-7b", "meta-llama/llama-2-7b-hf", "meta-llama/llama-2-7b-chat-hf"],
                    "llama-2-7b"),
    **dict.fromkeys(["meta-llama/llama-2-70b", "meta-llama/llama-2-70b-hf", "meta-llama/llama-2-70b-chat-hf"],
                    "llama-2-70b"),
    **dict.fromkeys([f"meta-llama/{prefix}llama-3.1-8b{suffix}" for prefix in ("", "meta-")
                     for suffix in ("", "-instruct")], "llama-3.1-8b"),
    **dict.fromkeys([f"meta-llama/{prefix}llama-3.1-70b{suffix}" for prefix in ("", "meta-")
                     for suffix in ("", "-instruct")], "llama-3.1-70b"),
}
TEACHER_LAYERS = "teacher-layers:"


def bundled_architecture(hub_id: str) -> Path | None:
    """The bundled config directory of a known hub id, or None."""
    name = HUB_ARCHITECTURES.get(hub_id.strip().lower())
    return ARCH_DIR / name if name else None


def architecture_config(spec: str, trust_remote_code: bool = False, teacher: str | None = None) -> PretrainedConfig:
    """The config of ``spec`` without downloading anything; ``teacher`` is the teacher's spec, for
    ``teacher-layers:`` students. An unresolvable spec is a one-line ConfigError."""
    if spec.startswith("tiny:"):
        return _wrap(spec, lambda: preset_config(spec.split(":", 1)[1]))
    if spec.startswith("builtin:"):
        return _wrap(spec, lambda: AutoConfig.from_pretrained(builtin_model_dir(spec.split(":", 1)[1])))
    if spec.startswith(TEACHER_LAYERS):
        if teacher is None:
            raise ConfigError(f"{spec}: a teacher-layers student needs the teacher's spec")
        config = architecture_config(teacher, trust_remote_code)
        ids = [int(i) for i in spec.split(":", 1)[1].split(",") if i.strip()]
        if not ids or not all(0 <= i < config.num_hidden_layers for i in ids):
            raise ConfigError(f"{spec}: layer ids must be within [0, {config.num_hidden_layers - 1}]")
        config.num_hidden_layers = len(ids)
        return config
    local = Path(spec).expanduser()
    if (local / "config.json").is_file():
        return _wrap(spec, lambda: AutoConfig.from_pretrained(local, trust_remote_code=trust_remote_code))
    bundled = bundled_architecture(spec)
    if bundled is not None:
        return AutoConfig.from_pretrained(bundled)
    known = ", ".join(sorted({k for k in HUB_ARCHITECTURES if "chat" not in k and "instruct" not in k}))
    raise ConfigError(f"{spec}: no local config.json and not a bundled architecture (known hub ids: {known}, "
                      "with -Instruct/-chat-hf variants); point the spec at a directory holding its config.json")


def _wrap(spec: str, load: Callable[[], Any]) -> Any:
    """``load()``, with a ValueError/OSError (unknown model type, unreadable file, remote code refused)
    turned into a one-line ConfigError naming ``spec``."""
    try:
        return load()
    except (ValueError, OSError) as e:
        raise ConfigError(f"{spec}: cannot build the model from its config: {str(e).splitlines()[0][:200]}") from None


def meta_model(config: PretrainedConfig, task: str, num_labels: int, trust_remote_code: bool = False) -> nn.Module:
    """The model of ``config`` on the meta device: shapes only, no memory, no initialisation cost."""
    if task == "sequence_classification":
        config.num_labels = num_labels
    auto = AutoModelForSequenceClassification if task == "sequence_classification" else AutoModelForCausalLM
    with torch.device("meta"):
        return _wrap(getattr(config, "_name_or_path", "") or config.model_type,
                     lambda: auto.from_config(config, trust_remote_code=trust_remote_code))


@dataclass(frozen=True)
class ModelShape:
    """What the memory formulas need of one model (counts of parameters; tied weights counted once)."""

    spec: str
    params: int  # every parameter
    block_params: int  # inside the transformer blocks (FSDP2 shards and gathers them block by block)
    linear_params: int  # weights that go through linear layers (autocast makes a bf16 copy of each)
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_dim: int  # key/value width per token per layer: num_key_value_heads * head_dim
    vocab: int
    max_positions: int

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV-cache bytes per token of context, all layers: keys and values, ``(2, layers, kv_dim)``."""
        return 2 * self.layers * self.kv_dim * dtype_bytes


def model_shape(spec: str, model: nn.Module) -> ModelShape:
    """The ``ModelShape`` of a (meta or real) model."""
    from transformers.pytorch_utils import Conv1D

    from raykd.models.load import count_params, transformer_blocks

    config = model.config.get_text_config()
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads  # no GQA: as many as query heads
    linear = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, Conv1D))}
    return ModelShape(
        spec=spec, params=count_params(model), block_params=count_params(transformer_blocks(model)),
        linear_params=sum(linear.values()), layers=config.num_hidden_layers, hidden=config.hidden_size,
        intermediate=getattr(config, "intermediate_size", None) or 4 * config.hidden_size, heads=heads,
        kv_dim=kv_heads * head_dim,
        vocab=config.vocab_size, max_positions=getattr(config, "max_position_embeddings", 0) or 0,
    )


def lora_params(model: nn.Module, requested: list[str], rank: int, task: str) -> tuple[int, list[str]]:
    """Trainable parameters of LoRA at ``rank`` on the modules ``requested`` resolves to (as
    ``raykd.models.load.add_lora`` resolves them), counted from the layers' shapes: each targeted linear
    ``(in, out)`` gets ``A (rank, in)`` and ``B (out, rank)``, i.e. ``rank * (in + out)``. A classifier's
    head stays fully trainable (peft's modules_to_save for sequence classification). Returns the count
    and the target names. Names match as peft matches a list: the full name, or a ``.name`` suffix."""
    from transformers.pytorch_utils import Conv1D

    from raykd.models.load import lora_target_modules

    targets = lora_target_modules(model, requested)
    total = 0
    for name, module in model.named_modules():
        if not any(name == t or name.endswith("." + t) for t in targets):
            continue
        if isinstance(module, nn.Linear):
            total += rank * (module.in_features + module.out_features)
        elif isinstance(module, Conv1D):  # GPT-2's fused projections: weight (in, out)
            total += rank * sum(module.weight.shape)
    if task == "sequence_classification":
        total += sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in ("score", "classifier"))
    return total, targets
