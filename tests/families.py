"""Tiny randomly initialised models of several Hugging Face families, built locally from configs, with
tokenizers trained here that behave like the real ones (no download):

* ``llama``: adds BOS itself (``<s> text``), no pad token (as Llama-3 / Mistral).
* ``qwen2``: no BOS at all, pad token present, generation_config stops at a list of ids, a ChatML chat
  template (the others have none, as base models often do).
* ``gpt2``: one ``<|endoftext|>`` token for BOS and EOS, no pad token; attention named ``c_attn``.
* ``mistral``: adds BOS itself, no pad token.
* ``bert``: an encoder classifier, WordPiece with ``[CLS] text [SEP]`` and ``[PAD]``; blocks at
  ``encoder.layer``; attention ``query`` / ``value``.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from raykd.builtin.data import generate_split

CAUSAL = ("llama", "qwen2", "gpt2", "mistral")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# A Llama-3-style template that writes BOS itself, as the official one does, with its own end of turn.
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start|>{{ m['role'] }}\n{{ m['content'] }}<|eot|>"
          "{% endfor %}{% if add_generation_prompt %}<|start|>assistant\n{% endif %}")
VOCAB = 400
SIZE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=128)


def _texts() -> list[str]:
    rows = generate_split("corpus")[:2000] + generate_split("train") + generate_split("cls_train")
    return [r.get("text") or r["prompt"] + r["completion"] for r in rows]


def _byte_bpe(specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_texts(), trainer)
    return tok


@functools.cache
def tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A tokenizer with the special-token behaviour of ``family`` (see the module docstring); one per
    family and process, so a family's teacher and student share it (WordPiece training is not
    deterministic across runs)."""
    if family in ("llama", "mistral"):
        tok = _byte_bpe(["<unk>", "<s>", "</s>"])
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if family == "qwen2":
        tok = _byte_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                       chat_template=CHATML)
    if family == "gpt2":
        tok = _byte_bpe(["<|endoftext|>"])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    if family == "bert":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok.train_from_iterator(_texts(), trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=specials,
                                                                    show_progress=False))
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]")
    raise ValueError(family)


def _model(family: str, tok: PreTrainedTokenizerFast, layers: int):
    size = SIZE | {"num_hidden_layers": layers, "vocab_size": len(tok)}
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    gqa = {"num_key_value_heads": 2}  # grouped-query attention, as these families ship
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**size, **ids, **gqa))
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(**size, **ids, **gqa, sliding_window=None))
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**size, **ids, **gqa))
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=layers, n_head=4, n_positions=128,
                                          **ids))
    if family == "bert":
        return BertForSequenceClassification(BertConfig(**size, num_labels=3, pad_token_id=tok.pad_token_id))
    raise ValueError(family)


def build(family: str, root: Path, layers: int = 2) -> Path:
    """``root/<family>-<layers>``: a saved HF directory (config, weights, tokenizer, generation config)."""
    out = root / f"{family}-{layers}"
    if (out / "config.json").exists():
        return out
    tok = tokenizer(family)
    model = _model(family, tok, layers)
    if family == "qwen2":  # as Qwen's chat models: the answer ends at either of two tokens
        model.generation_config = GenerationConfig(eos_token_id=[tok.eos_token_id, tok.pad_token_id])
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def chat_tokenizers(root: Path) -> dict[str, PreTrainedTokenizerFast]:
    """Chat tokenizers saved under ``root`` and loaded as raykd loads them: ``qwen2`` (ChatML, no BOS),
    ``llama`` (a Llama-3-style template that writes BOS, ending turns with ``<|eot|>``), ``mistral`` (no
    template) and ``builtin`` (raykd's own; turns end with EOS)."""
    from raykd.builtin.presets import TOKENIZER_DIR
    from raykd.data.tokens import load_tokenizer

    out = {"builtin": load_tokenizer(str(TOKENIZER_DIR))}
    for family in ("qwen2", "llama", "mistral"):
        tok = tokenizer(family)
        if family == "llama":
            tok = copy.deepcopy(tok)
            tok.add_special_tokens({"additional_special_tokens": ["<|start|>", "<|eot|>"]})
            tok.chat_template = LLAMA3
        tok.save_pretrained(root / family)
        out[family] = load_tokenizer(str(root / family))
    return out
