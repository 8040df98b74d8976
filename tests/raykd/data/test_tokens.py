"""Tokenizers as users bring them: pad, BOS exactly once, joined-text encoding, stop ids, framing."""

import copy

import pytest

from raykd.builtin.presets import TOKENIZER_DIR
from raykd.data.tokens import (
    IGNORE_INDEX,
    TokenizerError,
    check_same_vocabulary,
    classification_ids,
    encode_lm_row,
    lm_prefix,
    load_tokenizer,
    stop_token_ids,
)
from tests import families

PROMPT, COMPLETION = "question: what are fox and red?\nanswer:", " an animal and a color"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family's tokenizer saved and loaded back through raykd, plus the built-in one."""
    root = tmp_path_factory.mktemp("tokenizers")
    out = {"builtin": load_tokenizer(str(TOKENIZER_DIR))}
    for family in (*families.CAUSAL, "bert"):
        families.tokenizer(family).save_pretrained(root / family)
        out[family] = load_tokenizer(str(root / family))
    return out


@pytest.mark.parametrize("family", ["builtin", *families.CAUSAL])
def test_bos_exactly_once_and_ids_equal_the_joined_encoding(saved, family):
    tok = saved[family]
    ids, labels = encode_lm_row(tok, PROMPT, COMPLETION, 10**6)
    bos = tok.bos_token_id
    if bos is not None and bos != tok.eos_token_id:
        assert ids.count(bos) == 1 and ids[0] == bos
    else:
        assert ids[0] != bos or bos is None  # GPT-2 and Qwen2: no BOS
    body = tok(PROMPT + COMPLETION, add_special_tokens=False).input_ids
    assert ids == lm_prefix(tok) + body + [tok.eos_token_id]
    targets = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert tok.decode(targets[:-1]) == COMPLETION and targets[-1] == tok.eos_token_id
    assert len(labels) == len(ids)


def test_tokenizers_without_a_pad_token_pad_with_eos(saved):
    for family in ("gpt2", "llama", "mistral"):
        assert families.tokenizer(family).pad_token_id is None
        assert saved[family].pad_token_id == saved[family].eos_token_id
    assert saved["qwen2"].pad_token_id != saved["qwen2"].eos_token_id  # its own pad token is kept


def test_a_tokenizer_with_neither_pad_nor_eos_is_refused(tmp_path):
    tok = copy.deepcopy(families.tokenizer("gpt2"))  # the shared one stays as built
    tok.eos_token = None
    tok.bos_token = None
    tok.save_pretrained(tmp_path)
    with pytest.raises(TokenizerError, match="neither a pad nor an EOS"):
        load_tokenizer(str(tmp_path))


def test_prompt_rows_have_no_labels_and_no_eos(saved):
    tok = saved["llama"]
    ids, labels = encode_lm_row(tok, PROMPT, None, 10**6)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1 and ids[-1] != tok.eos_token_id
    assert set(labels) == {IGNORE_INDEX}


def test_classification_uses_the_tokenizers_own_framing(saved):
    bert = saved["bert"]
    ids = classification_ids(bert, "the red fox", 16)
    assert ids[0] == bert.cls_token_id and ids[-1] == bert.sep_token_id and ids.count(bert.cls_token_id) == 1
    assert len(classification_ids(bert, "word " * 50, 16)) == 16 and classification_ids(bert, "word " * 50, 16)[-1] \
        == bert.sep_token_id
    llama = saved["llama"]
    assert classification_ids(llama, "the red fox", 16).count(llama.bos_token_id) == 1
    gpt2 = saved["gpt2"]
    assert gpt2.eos_token_id not in classification_ids(gpt2, "the red fox", 16)


def test_stop_ids_come_from_the_generation_config_list(saved, tmp_path):
    from transformers import AutoModelForCausalLM

    path = families.build("qwen2", tmp_path)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = load_tokenizer(str(path))
    assert stop_token_ids(model, tok) == sorted({tok.eos_token_id, tok.pad_token_id})


def test_a_templated_prompt_that_writes_its_bos_gets_no_second_one(saved):
    tok = saved["llama"]
    ids, _ = encode_lm_row(tok, tok.bos_token + "user: hi\nassistant:", None, 10**6)
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


def test_a_student_tokenizer_adding_only_special_tokens_is_accepted_with_a_note(tmp_path):
    """As transformers' Qwen2Tokenizer loads a GPT-2 tokenizer's files plus ``<|endoftext|>``: the teacher's
    tokens keep their ids, so the student is accepted; a changed or a plain added token is refused."""
    teacher = families.tokenizer("gpt2")
    teacher.save_pretrained(tmp_path / "teacher")
    special = copy.deepcopy(teacher)
    special.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    special.save_pretrained(tmp_path / "special")
    note = check_same_vocabulary(str(tmp_path / "teacher"), str(tmp_path / "special"))
    assert f"('<|im_end|>' at {len(teacher)})" in note and "use the teacher's" in note
    assert check_same_vocabulary(str(tmp_path / "teacher"), str(tmp_path / "teacher")) is None
    plain = copy.deepcopy(teacher)
    plain.add_tokens(["zebra"])
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(TokenizerError, match=r"1 \(token, id\) pairs differ, e\.g\. \('zebra', "):
        check_same_vocabulary(str(tmp_path / "teacher"), str(tmp_path / "plain"))
    with pytest.raises(TokenizerError, match="is not the teacher's"):
        check_same_vocabulary(str(tmp_path / "teacher"), str(TOKENIZER_DIR))
