"""Conversations rendered by the tokenizer's own template: assistant turns as targets, BOS once, the
end-of-turn token learned, and the served prompt equal to the training prompt."""

import copy

import pytest

from raykd.builtin.presets import TOKENIZER_DIR
from raykd.data.chat import ChatError, conversation, render_chat
from raykd.data.tokens import TokenizerError, load_tokenizer

TALK = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what are fox and red?"},
        {"role": "assistant", "content": "an animal and a color"}, {"role": "user", "content": "and owl?"},
        {"role": "assistant", "content": "a bird"}]
ENDS = [("qwen2", "<|im_end|>"), ("llama", "<|eot|>"), ("builtin", "</s>")]


def decoded_targets(tok, rendered) -> list[str]:
    """The decoded runs of consecutive target tokens."""
    runs, current = [], []
    for i, t in zip(rendered.ids, rendered.targets):
        if t:
            current.append(i)
        elif current:
            runs.append(tok.decode(current)), current.clear()
    return runs + ([tok.decode(current)] if current else [])


@pytest.mark.parametrize("family, end", ENDS)
def test_every_assistant_turn_and_its_end_token_are_the_targets(chat_tokenizers, family, end):
    tok = chat_tokenizers[family]
    every = decoded_targets(tok, render_chat(tok, TALK))  # the built-in template's reply keeps its space
    assert [run.lstrip() for run in every] == [f"an animal and a color{end}", f"a bird{end}"]
    last = decoded_targets(tok, render_chat(tok, TALK, train_on="last_assistant"))
    assert [run.lstrip() for run in last] == [f"a bird{end}"]


@pytest.mark.parametrize("family", ["qwen2", "llama", "builtin"])
def test_bos_once_and_the_served_prompt_is_the_training_prefix(chat_tokenizers, family):
    tok = chat_tokenizers[family]
    trained = render_chat(tok, TALK, train_on="last_assistant")
    served = render_chat(tok, TALK[:-1])  # ends in a user turn: the generation prompt, no targets
    assert not any(served.targets)
    assert trained.ids[: len(served.ids)] == served.ids and trained.targets.index(True) == len(served.ids)
    bos = tok.bos_token_id
    if bos is not None and bos != tok.eos_token_id:
        assert trained.ids.count(bos) == 1 and trained.ids[0] == bos


def test_text_parts_render_as_their_joined_text(chat_tokenizers):
    tok = chat_tokenizers["qwen2"]
    parts = copy.deepcopy(TALK)
    parts[1]["content"] = [{"type": "text", "text": "what are fox"}, {"type": "text", "text": "and red?"}]
    joined = copy.deepcopy(TALK)
    joined[1]["content"] = "what are fox\nand red?"
    assert render_chat(tok, parts).ids == render_chat(tok, joined).ids


def test_a_tokenizer_without_a_chat_template_is_refused_naming_it(chat_tokenizers):
    with pytest.raises(TokenizerError, match="no chat template"):
        render_chat(chat_tokenizers["mistral"], TALK)
    builtin = load_tokenizer(str(TOKENIZER_DIR))
    assert builtin.chat_template  # the built-in tokenizer has one


@pytest.mark.parametrize("value, message", [
    ([], "non-empty list"), ("[1]", "message 0: not an object"),
    ([{"role": "bot", "content": "x"}], "role 'bot'"), ([{"role": "user", "content": 3}], "content must be"),
    ([{"role": "user", "content": [{"type": "image_url"}]}], "content parts"),
    ([{"role": "assistant", "content": "x"}], "cannot start with an assistant"),
])
def test_a_malformed_conversation_is_one_line_naming_the_message(value, message):
    with pytest.raises(ChatError, match=message):
        conversation(value)


def test_absent_keys_filled_with_none_are_dropped():
    assert conversation([{"role": "user", "content": "hi", "tool_calls": None}]) == [{"role": "user", "content": "hi"}]


def test_an_assistant_turn_of_weight_0_is_context_not_a_target(chat_tokenizers):
    tok = chat_tokenizers["qwen2"]
    weighted = copy.deepcopy(TALK)
    weighted[2]["weight"] = 0  # OpenAI's fine-tuning format: do not learn this turn
    assert decoded_targets(tok, render_chat(tok, weighted)) == ["a bird<|im_end|>"]


def test_a_template_that_refuses_a_conversation_is_a_chat_error(chat_tokenizers):
    tok = copy.deepcopy(chat_tokenizers["qwen2"])
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                         "{% endif %}" + tok.chat_template)
    with pytest.raises(ChatError, match="the chat template refuses the conversation: System role not supported"):
        render_chat(tok, TALK)
