"""The teacher: where the fine-tuned one lives, and how it is rebuilt from a fine-tune checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from raykd.config import ConfigError, RaykdConfig
from raykd.data.tokens import load_tokenizer
from raykd.models.load import add_lora, load_configured, lora_target_modules, model_skeleton, resolve_tokenizer
from raykd.training.checkpoints import load_trainable


def teacher_dir(cfg: RaykdConfig) -> str:
    """The teacher later stages use: ``cache.teacher`` or the fine-tuned ``RUN/teacher``."""
    path = cfg.cache.teacher or str(cfg.stage_dir("teacher"))
    if not (Path(path) / "config.json").exists():
        raise ConfigError(f"{path}: no teacher model here; run `raykd finetune` first or set cache.teacher")
    return path


def build_teacher(cfg: RaykdConfig, checkpoint_dir: str | None = None, weights: bool = True) -> torch.nn.Module:
    """The teacher as fine-tuned: base (+ LoRA), with the checkpoint's trainable weights if given.
    ``weights=False``: the architecture only (see ``load_model``)."""
    torch.manual_seed(cfg.seed)  # same LoRA / head initialisation on every rank and in the export
    model = load_configured(cfg.models.teacher, cfg, weights=weights)
    if cfg.finetune.method == "lora":
        model = add_lora(model, cfg.finetune, cfg.task)
    if checkpoint_dir is not None:
        load_trainable(model, checkpoint_dir)
    return model


def check_teacher(cfg: RaykdConfig) -> None:
    """Before any Ray work: the tokenizer loads, and the LoRA targets exist in the teacher's architecture."""
    trust = cfg.models.trust_remote_code
    load_tokenizer(resolve_tokenizer(cfg.models), trust)
    if cfg.finetune.method == "lora":
        skeleton = model_skeleton(cfg.models.teacher, cfg.task, cfg.data.num_labels, trust)
        lora_target_modules(skeleton, cfg.finetune.lora_target_modules)
