"""OpenAI request parsing and checks, response and stream shapes."""

import json

import pytest

from raykd.data.examples import encode_example
from raykd.data.tokens import IGNORE_INDEX
from serving import protocol
from serving.protocol import ApiError, ChatRequest, CompletionRequest, Limits
from tests.raykd.data.test_chat import TALK

LIMITS = Limits(max_tokens=64, max_n=4)


def parse_check(cls, body: dict | bytes):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return protocol.check(protocol.parse(cls, raw), LIMITS)


@pytest.mark.parametrize("cls, body, param", [
    (CompletionRequest, {"model": "ab", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    (CompletionRequest, {"model": "ab", "prompt": "x", "max_tokens": 65}, "max_tokens"),
    (CompletionRequest, {"model": "ab", "prompt": "x", "temperature": -0.1}, "temperature"),
    (CompletionRequest, {"model": "ab", "prompt": "x", "top_p": 0}, "top_p"),
    (CompletionRequest, {"model": "ab", "prompt": "x", "top_p": 1.5}, "top_p"),
    (CompletionRequest, {"model": "ab", "prompt": "x", "n": 5}, "n"),
    (CompletionRequest, {"model": "ab", "prompt": ""}, "prompt"),
    (CompletionRequest, {"model": "ab"}, "prompt"),
    (CompletionRequest, {"model": "ab", "prompt": "x", "max_tokens": "many"}, "max_tokens"),
    (ChatRequest, {"model": "ab", "messages": []}, "messages"),
    (ChatRequest, {"model": "ab", "messages": [{"role": "user"}]}, "messages.0.content"),
    (ChatRequest, {"model": "ab", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    (ChatRequest, {"model": "ab", "messages": "hello"}, "messages"),
])
def test_bad_fields_are_400s_naming_the_parameter(cls, body, param):
    with pytest.raises(ApiError) as e:
        parse_check(cls, body)
    assert e.value.status == 400 and e.value.param == param
    assert e.value.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [b"{bad", b"[1, 2]", b"\xff\xfe"])
def test_malformed_bodies_are_400s(raw):
    with pytest.raises(ApiError) as e:
        parse_check(CompletionRequest, raw)
    assert e.value.status == 400


def test_defaults_and_chat_max_completion_tokens():
    assert parse_check(CompletionRequest, {"model": "ab", "prompt": "x"}) == 16
    assert parse_check(ChatRequest, {"model": "ab", "messages": [{"role": "user", "content": "hi"}],
                                     "max_completion_tokens": 7, "logit_bias": {}}) == 7


def test_response_and_stream_shapes():
    use = protocol.usage(3, 2)
    chat = protocol.response(True, "chatcmpl-1", "student", [("hi", "stop", None)], use)
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"] == {"role": "assistant",
                                                                                     "content": "hi"}
    assert chat["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    text = protocol.response(False, "cmpl-1", "teacher", [("a", "length", None), ("b", "stop", None)], use)
    assert [c["text"] for c in text["choices"]] == ["a", "b"] and text["object"] == "text_completion"
    event = protocol.stream_chunk(True, "chatcmpl-1", "student", " there", None)
    assert event.startswith("data: ") and event.endswith("\n\n")
    assert json.loads(event[6:])["choices"][0]["delta"] == {"content": " there"}
    final = json.loads(protocol.stream_chunk(False, "cmpl-1", "student", None, None, use)[6:])
    assert final["choices"] == [] and final["usage"]["total_tokens"] == 5


ENTRIES = [{"token": "a", "logprob": -0.1, "top": [("a", -0.1), ("b", -2.5)]},
           {"token": "bc", "logprob": -0.7, "top": [("x", -0.6), ("bc", -0.7)]}]


def test_logprobs_take_openais_shapes_for_chat_and_completions():
    chat = protocol.logprobs_body(True, ENTRIES)["content"]
    assert [c["token"] for c in chat] == ["a", "bc"] and chat[1]["bytes"] == [98, 99]
    assert chat[0]["top_logprobs"] == [{"token": "a", "logprob": -0.1, "bytes": [97]},
                                       {"token": "b", "logprob": -2.5, "bytes": [98]}]
    legacy = protocol.logprobs_body(False, ENTRIES, offset=5)
    assert legacy["tokens"] == ["a", "bc"] and legacy["token_logprobs"] == [-0.1, -0.7]
    assert legacy["top_logprobs"][1] == {"x": -0.6, "bc": -0.7} and legacy["text_offset"] == [5, 6]
    assert protocol.logprobs_body(True, None) is None
    shaped = protocol.response(False, "cmpl-1", "student", [("abc", "length", ENTRIES)], protocol.usage(1, 2))
    assert shaped["choices"][0]["logprobs"]["tokens"] == ["a", "bc"]


@pytest.mark.parametrize("field,value,message", [
    ("stop", ["a", ""], "stop must be at most 4 non-empty strings"),
    ("stop", list("abcde"), "stop must be at most 4"),
    ("logprobs", 21, "logprobs must be between 0 and 20"),
    ("min_tokens", 17, "min_tokens must be between 0 and 16"),  # the default max_tokens
    ("top_k", 0, "top_k must be -1"),
    ("min_p", 1.5, "min_p must be between 0 and 1"),
    ("repetition_penalty", 0.0, "repetition_penalty must be in"),
    ("presence_penalty", -2.5, "presence_penalty must be between -2 and 2"),
    ("frequency_penalty", 3, "frequency_penalty must be between -2 and 2"),
    ("stop_token_ids", [3, -1], "stop_token_ids must be token ids >= 0"),
])
def test_stop_logprobs_and_vllms_sampling_fields_are_range_checked(field, value, message):
    request = protocol.CompletionRequest(model="student", prompt="hi", **{field: value})
    with pytest.raises(protocol.ApiError, match=message):
        protocol.check(request, protocol.Limits(64, 4))


def test_generation_carries_vllms_sampling_parameters():
    chat = protocol.ChatRequest(model="teacher", messages=[{"role": "user", "content": "hi"}], stop="\n", seed=7,
                                logprobs=True, top_logprobs=3)
    assert protocol.generation(chat, [1, 2], 8) == {
        "prompt_ids": [1, 2], "max_tokens": 8, "temperature": 1.0, "top_p": 1.0, "stop": ["\n"], "seed": 7,
        "logprobs": 3, "ignore_eos": False, "min_tokens": 0, "stop_token_ids": [], "vllm_sampling": {}}
    plain = protocol.CompletionRequest(model="teacher", prompt="hi")
    assert protocol.generation(plain, [1], 4)["logprobs"] is None and protocol.generation(plain, [1], 4)["stop"] == []
    # vLLM's own fields: those both engines honour as they are, the rest only where they are not no-ops
    body = {"model": "teacher", "prompt": "hi", "ignore_eos": True, "min_tokens": 3, "stop_token_ids": [5],
            "top_k": 4, "repetition_penalty": 1.0, "presence_penalty": 0.5}
    extended = protocol.generation(protocol.parse(protocol.CompletionRequest, json.dumps(body).encode()), [1], 8)
    assert (extended["ignore_eos"], extended["min_tokens"], extended["stop_token_ids"]) == (True, 3, [5])
    assert extended["vllm_sampling"] == {"top_k": 4, "presence_penalty": 0.5}


def chat(messages: list[dict]) -> ChatRequest:
    return protocol.parse(ChatRequest, json.dumps({"model": "ab", "messages": messages}).encode())


@pytest.mark.parametrize("family", ["qwen2", "llama", "builtin"])
def test_a_chat_request_gets_the_prompt_ids_training_used_for_the_same_conversation(chat_tokenizers, family):
    """ChatML (no BOS), a template that writes BOS itself, and the built-in one; content as text parts
    renders as its joined text, as in training."""
    tok = chat_tokenizers[family]
    sent = [dict(m) for m in TALK[:-1]]
    sent[1]["content"] = [{"type": "text", "text": "what are fox"}, {"type": "text", "text": "and red?"}]
    served = protocol.prompt_ids(tok, chat(sent))
    trained = [dict(m) for m in TALK]
    trained[1]["content"] = "what are fox\nand red?"
    ids, labels = encode_example(tok, trained, 10**6, "last_assistant")
    assert served == ids[: next(j for j, label in enumerate(labels) if label != IGNORE_INDEX)]


def test_a_conversation_training_would_refuse_is_a_400(chat_tokenizers):
    starts_with_reply = chat([{"role": "assistant", "content": "x"}])
    with pytest.raises(ApiError, match="cannot start with an assistant turn") as e:
        protocol.prompt_ids(chat_tokenizers["qwen2"], starts_with_reply)
    assert e.value.status == 400 and e.value.param == "messages"
    with pytest.raises(ApiError, match="no chat template"):
        protocol.prompt_ids(chat_tokenizers["mistral"], chat(TALK))
