"""Built-in model presets and asset locations.

``tiny:<name>`` is a freshly initialised Llama of a preset size; ``builtin:<name>`` is the same
architecture pre-trained on the built-in corpus and shipped with the package (regenerate with
``python scripts/build_builtin.py``). Sizes: the teacher (~19M parameters) is large enough that its
compute, not per-token overhead, dominates CPU generation; the student (~1M, 5% of it) has 2 blocks
because at this size a CPU's per-token time is per-block overhead, so fewer, wider blocks generate
faster than more, narrower ones of the same size (the report measures the student's speedup).
"""

from __future__ import annotations

from pathlib import Path

from transformers import LlamaConfig

BUILTIN_DIR = Path(__file__).parent / "assets"
TOKENIZER_DIR = BUILTIN_DIR / "tokenizer"
VOCAB_SIZE = 512
MAX_POSITIONS = 128

PRESETS: dict[str, dict] = {
    "teacher": dict(hidden_size=512, num_hidden_layers=6, intermediate_size=1408, num_attention_heads=8),
    "student": dict(hidden_size=192, num_hidden_layers=2, intermediate_size=512, num_attention_heads=4),
}


def preset_config(name: str) -> LlamaConfig:
    """LlamaConfig of a preset, with the built-in tokenizer's special ids."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MAX_POSITIONS,
        num_key_value_heads=p["num_attention_heads"],
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **p,
    )


def builtin_model_dir(name: str) -> Path:
    """Directory of a shipped pre-trained base (``<name>-base``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown built-in model {name!r}; choose one of {', '.join(PRESETS)}")
    return BUILTIN_DIR / f"{name}-base"
