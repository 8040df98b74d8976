"""The student: built from a base (HF directory, preset, or blocks of the teacher) and checked against
the teacher's tokenizer before any training."""

from __future__ import annotations

import torch

from raykd.builtin.presets import TOKENIZER_DIR
from raykd.config import ConfigError, RaykdConfig
from raykd.data.tokens import check_same_vocabulary, has_tokenizer, load_tokenizer
from raykd.models.load import keep_layers, load_configured, resolve_model, resolve_tokenizer
from raykd.models.teacher import teacher_dir
from raykd.training.checkpoints import load_trainable

TEACHER_LAYERS = "teacher-layers:"


def _layer_ids(spec: str) -> list[int]:
    return [int(i) for i in spec.split(":", 1)[1].split(",")]


def build_student(cfg: RaykdConfig, checkpoint_dir: str | None = None, weights: bool = True,
                  teacher: str | None = None) -> torch.nn.Module:
    """The student base (HF dir, preset, or blocks of ``teacher``, the teacher's directory), with
    checkpoint weights if given. ``weights=False``: the architecture only (see ``load_model``)."""
    torch.manual_seed(cfg.seed)
    spec = cfg.models.student
    if spec.startswith(TEACHER_LAYERS):
        if teacher is None:
            raise ValueError(f"models.student={spec} is built from the teacher: pass its directory")
        model = keep_layers(load_configured(teacher, cfg, weights=weights), _layer_ids(spec))
    else:
        model = load_configured(spec, cfg, weights=weights)
    if checkpoint_dir is not None:
        load_trainable(model, checkpoint_dir)
    return model


def student_tokenizer_dir(cfg: RaykdConfig) -> str | None:
    """Where the student's own tokenizer lives: the built-in one for ``builtin:``/``tiny:`` students,
    the student directory when it holds tokenizer files, None when it brings none (or is teacher blocks)."""
    spec = cfg.models.student
    if spec.startswith(("builtin:", "tiny:")):
        return str(TOKENIZER_DIR)
    if spec.startswith(TEACHER_LAYERS):
        return None
    path = resolve_model(spec)
    return path if has_tokenizer(path) else None


def check_student(cfg: RaykdConfig) -> None:
    """Refuse, before any training, a student spec that cannot load or does not speak the teacher's
    vocabulary: its tokenizer must be the teacher's, and its vocabulary may be padded beyond the
    tokenizer's, never smaller."""
    from transformers import AutoConfig

    from raykd.builtin.presets import preset_config

    spec = cfg.models.student
    teacher = (teacher_dir(cfg) if cfg.distill.teacher_source != "none" or spec.startswith(TEACHER_LAYERS)
               else None)
    teacher_tokenizer = resolve_tokenizer(cfg.models) if cfg.distill.teacher_source == "none" else teacher
    try:
        if spec.startswith("tiny:"):
            config = preset_config(spec.split(":", 1)[1])
        elif spec.startswith(TEACHER_LAYERS):
            config = AutoConfig.from_pretrained(teacher)
            ids = _layer_ids(spec)
            if not ids or not all(0 <= i < config.num_hidden_layers for i in ids):
                raise ValueError(f"layer ids must be within [0, {config.num_hidden_layers - 1}]")
        else:
            config = AutoConfig.from_pretrained(resolve_model(spec), trust_remote_code=cfg.models.trust_remote_code)
    except (ValueError, OSError) as e:
        raise ConfigError(f"models.student={spec}: {str(e).splitlines()[0]}") from None
    own = student_tokenizer_dir(cfg)
    if own is not None:
        note = check_same_vocabulary(teacher_tokenizer, own, cfg.models.trust_remote_code)
        if note:
            print(f"[distill] note: {note}", flush=True)
    vocab = len(load_tokenizer(teacher_tokenizer, cfg.models.trust_remote_code))
    if cfg.task == "causal_lm" and config.vocab_size < vocab:
        raise ConfigError(f"models.student={spec} has vocab_size {config.vocab_size} < the teacher's tokenizer "
                          f"({vocab}): teacher and student must share a tokenizer")
