"""Tokenizers as users bring them: padding, BOS, stop tokens and special-token framing, decided once.

The rules every stage follows (README, "Your own models and data"):

* **Padding.** A tokenizer without a pad token (Llama-3, GPT-2, Mistral) pads with its EOS token.
  Nothing is trained on padding either way: padded positions have ``attention_mask`` 0 and label -100.
  A tokenizer with neither pad nor EOS is refused.
* **BOS exactly once.** A tokenizer that frames text with a BOS itself (Llama, Mistral) keeps its
  own; one that does not gets its ``bos_token`` prefixed when it has one distinct from EOS (the
  built-in tokenizer); GPT-2 (BOS is EOS) and Qwen2 (no BOS) get none; a prompt whose text already
  starts with the BOS token (a chat template that writes it) gets none added.
* **Prompt + completion as one text.** ``prompt + completion`` is encoded in one call, so the ids
  equal the tokenizer's encoding of the joined text (after the BOS rule above); a token is a target
  when it ends after the prompt's last character. EOS is appended to the target.
* **Stop tokens.** Generation stops at any of ``generation_config.eos_token_id`` (an int or a list,
  e.g. Llama-3's ``<|eot_id|>``), the tokenizer's EOS and the chat template's end-of-turn token.
* **Classification** inputs get the tokenizer's own framing (``[CLS] text [SEP]`` for BERT); a
  decoder's tokenizer, which frames nothing, gets the BOS rule.
"""

from __future__ import annotations

import functools
from pathlib import Path

from raykd.config import ConfigError

IGNORE_INDEX = -100  # label value that losses skip (padding and prompt tokens)
_PROBE = "hello world"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


class TokenizerError(ConfigError):
    """A tokenizer that cannot be used as it is: the message names it and what to set."""


def has_tokenizer(directory: str) -> bool:
    """Whether ``directory`` holds tokenizer files (a model directory may bring weights only)."""
    return any((Path(directory) / name).exists() for name in TOKENIZER_FILES)


@functools.lru_cache(maxsize=8)
def load_tokenizer(path: str, trust_remote_code: bool = False):
    """A tokenizer loaded once per process, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0][:200]}") from None
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise TokenizerError(f"tokenizer {path} has neither a pad nor an EOS token: add a pad token to it")
        tok.pad_token = tok.eos_token
    return tok


@functools.lru_cache(maxsize=8)
def special_frame(tok) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids the tokenizer itself puts before and after a text (``add_special_tokens=True``)."""
    bare = tok(_PROBE, add_special_tokens=False).input_ids
    framed = tok(_PROBE).input_ids
    for start in range(len(framed) - len(bare) + 1):
        if framed[start : start + len(bare)] == bare:
            return tuple(framed[:start]), tuple(framed[start + len(bare) :])
    return (), ()


def lm_prefix(tok) -> list[int]:
    """What a causal-LM example starts with: the tokenizer's own BOS, else a distinct ``bos_token``."""
    prefix = list(special_frame(tok)[0])
    if prefix:
        return prefix
    bos = tok.bos_token_id
    return [bos] if bos is not None and bos != tok.eos_token_id else []


def _split_encoding(tok, prompt: str, completion: str) -> tuple[list[int], list[bool]]:
    """Ids of ``prompt + completion`` in one encoding, and for each whether it is a completion token."""
    try:
        enc = tok(prompt + completion, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # a tokenizer without offsets: encode the two parts separately
        first = tok(prompt, add_special_tokens=False).input_ids if prompt else []
        second = tok(completion, add_special_tokens=False).input_ids
        return first + second, [False] * len(first) + [True] * len(second)
    cut = len(prompt)
    return list(enc.input_ids), [end > cut for _, end in enc.offset_mapping]


def encode_lm_row(tok, prompt: str, completion: str | None, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels of one causal-LM example, truncated to ``max_len``.

    ``prefix prompt completion EOS`` with labels only on ``completion EOS`` (a text row is
    ``prompt=""``, so every token is learned). ``completion=None`` encodes a prompt to be completed:
    no EOS, no labels.
    """
    # A prompt whose text already starts with the BOS token (a chat template that writes it, as
    # Llama-3's does) gets no second one.
    prefix = [] if tok.bos_token and prompt.startswith(tok.bos_token) else lm_prefix(tok)
    if completion is None:
        ids = prefix + (tok(prompt, add_special_tokens=False).input_ids if prompt else [])
        return ids[:max_len], [IGNORE_INDEX] * min(len(ids), max_len)
    body, is_target = _split_encoding(tok, prompt, completion)
    ids = prefix + body + [tok.eos_token_id]
    labels = [IGNORE_INDEX] * len(prefix) + [i if t else IGNORE_INDEX for i, t in zip(body, is_target)]
    return ids[:max_len], (labels + [tok.eos_token_id])[:max_len]


def classification_ids(tok, text: str, max_len: int) -> list[int]:
    """``text`` framed as the tokenizer frames it (``[CLS] text [SEP]``; a decoder's: the BOS rule)."""
    prefix, suffix = special_frame(tok)
    if not prefix and not suffix:
        prefix = tuple(lm_prefix(tok))
    room = max(0, max_len - len(prefix) - len(suffix))
    return [*prefix, *tok(str(text), add_special_tokens=False).input_ids[:room], *suffix]


@functools.lru_cache(maxsize=8)
def end_of_turn_id(tok) -> int | None:
    """The special token the chat template closes an assistant turn with (``<|im_end|>``, ``<|eot_id|>``),
    or None (no template, or a turn that ends in plain text): the last token of a rendered reply."""
    if not getattr(tok, "chat_template", None):
        return None
    user, reply = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
    try:
        text = tok.apply_chat_template([user, reply], tokenize=False).rstrip()
    except Exception:  # a template that refuses this conversation names its problem where data meets it
        return None
    ids = tok(text, add_special_tokens=False).input_ids
    return ids[-1] if ids and ids[-1] in set(tok.all_special_ids) | set(tok.added_tokens_decoder) else None


def stop_token_ids(model, tok) -> list[int]:
    """Every id that ends a generation: the model's ``generation_config.eos_token_id`` (int or list),
    the tokenizer's EOS and the chat template's end of turn."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, tok.eos_token_id, end_of_turn_id(tok)] if i is not None})


def check_same_vocabulary(teacher_dir: str, student_dir: str, trust_remote_code: bool = False) -> str | None:
    """Refuse a student whose tokenizer maps any of the teacher's tokens to another id: distillation
    compares the two models' distributions token id by token id. A student tokenizer that only adds
    special tokens at ids the teacher never produces (transformers' ``Qwen2Tokenizer`` adds
    ``<|endoftext|>`` to the same files, for one) is accepted: training uses the teacher's tokenizer.
    Returns a note naming such additions, None when the vocabularies are equal."""
    teacher_tok = load_tokenizer(teacher_dir, trust_remote_code)
    student_tok = load_tokenizer(student_dir, trust_remote_code)
    teacher, student = teacher_tok.get_vocab(), student_tok.get_vocab()
    if teacher == student:
        return None
    differ = sorted(((t, i) for t, i in teacher.items() if student.get(t) != i), key=lambda item: item[1])
    extra = {t: i for t, i in student.items() if t not in teacher}
    special = set(student_tok.all_special_tokens) | {str(t) for t in student_tok.added_tokens_decoder.values()
                                                     if t.special}
    plain = sorted((i, t) for t, i in extra.items() if t not in special or i in set(teacher.values()))
    if differ or plain:
        example = differ[0] if differ else (plain[0][1], plain[0][0])
        raise TokenizerError(f"the student's tokenizer ({student_dir}, {len(student)} tokens) is not the teacher's "
                             f"({teacher_dir}, {len(teacher)} tokens): {len(differ) + len(plain)} (token, id) pairs "
                             f"differ, e.g. {example!r}; give models.student a base that uses the teacher's tokenizer")
    added = ", ".join(f"{t!r} at {i}" for t, i in sorted(extra.items(), key=lambda item: item[1]))
    return (f"the student's tokenizer ({student_dir}) adds special tokens the teacher never produces ({added}); "
            f"training and the saved student use the teacher's ({teacher_dir})")
