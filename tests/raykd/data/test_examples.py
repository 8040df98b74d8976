"""One encoding of every row kind: a held-out conversation's prompt and reference, and the prompt ids
the cache, evaluation and on-policy sampling continue from."""

import pytest

from raykd.config import DataConfig
from raykd.data.examples import encode_example, generation_case, prompt_ids, timing_prompt
from raykd.data.tokens import IGNORE_INDEX, end_of_turn_id, stop_token_ids
from tests.raykd.data.test_chat import ENDS, TALK


@pytest.mark.parametrize("family", ["qwen2", "llama", "builtin"])
def test_a_held_out_conversation_is_its_turns_before_the_last_reply_and_that_reply(chat_tokenizers, family):
    tok, data = chat_tokenizers[family], DataConfig()
    prompt, reference = generation_case({"messages": TALK}, data, "messages")
    assert prompt == TALK[:-1] and reference == "a bird"
    assert timing_prompt({"messages": TALK}, data, "messages") == prompt
    ids, labels = encode_example(tok, TALK, 10**6, "last_assistant")
    asked = prompt_ids(tok, prompt, 10**6)
    assert ids[: len(asked)] == asked and labels[len(asked)] != IGNORE_INDEX  # the reply starts where the prompt ends
    assert all(label == IGNORE_INDEX for label in labels[: len(asked)])


def test_a_prompt_row_is_its_prompt_and_completion(chat_tokenizers):
    row = {"prompt": "question: what is a fox?\nanswer:", "completion": " an animal"}
    assert generation_case(row, DataConfig(), "prompt") == (row["prompt"], row["completion"])
    assert timing_prompt({"text": "the fox"}, DataConfig(), "text") == "the fox"


@pytest.mark.parametrize("family, end", [*ENDS, ("mistral", None)])
def test_the_templates_end_of_turn_stops_generation(chat_tokenizers, family, end):
    tok = chat_tokenizers[family]
    eot = end_of_turn_id(tok)
    assert (tok.convert_ids_to_tokens(eot) if eot is not None else None) == end
    assert tok.eos_token_id in stop_token_ids(None, tok) and (eot is None or eot in stop_token_ids(None, tok))


def test_truncation_keeps_the_start(chat_tokenizers):
    tok = chat_tokenizers["qwen2"]
    ids, labels = encode_example(tok, TALK, 12)
    assert ids == encode_example(tok, TALK, 10**6)[0][:12] and len(labels) == 12


def test_a_labeled_conversation_ending_in_a_user_turn_learns_its_earlier_replies(chat_tokenizers):
    tok = chat_tokenizers["qwen2"]
    ids, labels = encode_example(tok, TALK[:-1], 10**6)
    learned = tok.decode([i for i, label in zip(ids, labels) if label != IGNORE_INDEX])
    assert learned == "an animal and a color<|im_end|>" and not tok.decode(ids).endswith("assistant\n")


@pytest.mark.parametrize("family", ["llama", "builtin"])
def test_a_long_conversation_prompt_loses_its_earliest_turns_not_its_bos_or_header(chat_tokenizers, family):
    tok = chat_tokenizers[family]
    whole = prompt_ids(tok, TALK[:-1], 10**6)
    cut = prompt_ids(tok, TALK[:-1], 12)
    assert len(cut) == 12 and cut[0] == whole[0] == tok.bos_token_id and cut[1:] == whole[-11:]
