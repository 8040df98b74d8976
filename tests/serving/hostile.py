"""Hypothesis strategies for hostile HTTP requests over the OpenAI request schema: each field either a
plausible value or any JSON at all (wrong types, huge and non-finite numbers, nested arrays and objects),
extra fields, non-object and deeply nested bodies, bad JSON, bad UTF-8, content-part arrays, missing or
wrong keys, huge headers."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from hypothesis import strategies as st

LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))
ANY_JSON = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def field(plausible: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(plausible, ANY_JSON)


NUMBER = st.one_of(st.floats(-1, 3), st.sampled_from([math.nan, math.inf, -math.inf, 1e308]))
TEXT = st.one_of(st.text(max_size=40), st.just("lore " * 5000))  # the long one is over the context
CONTENT_PARTS = st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]),
                                                "text": st.text(max_size=10)}), max_size=2)
MESSAGE = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "system", "assistant", "robot"]),
                                              "content": st.one_of(st.text(max_size=40), CONTENT_PARTS),
                                              "name": ANY_JSON})
FIELDS = {
    "model": field(st.sampled_from(["teacher", "student", "ab", "gpt-4", ""])),
    "prompt": field(st.one_of(TEXT, st.lists(st.text(max_size=20), max_size=3),
                              st.lists(st.integers(0, 300), max_size=5))),
    "messages": field(st.lists(MESSAGE, max_size=3)),
    "max_tokens": field(st.one_of(st.integers(-3, 4), st.just(10**20))),
    "max_completion_tokens": field(st.integers(-3, 4)),
    "temperature": field(NUMBER),
    "top_p": field(NUMBER),
    "n": field(st.integers(-1, 6)),
    "stream": field(st.booleans()),
    "stop": field(st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=6))),
    "seed": field(st.integers(-(2**65), 2**65)),
    "logprobs": field(st.one_of(st.integers(-2, 30), st.booleans())),
    "top_logprobs": field(st.integers(-2, 30)),
    "stream_options": field(st.fixed_dictionaries({"include_usage": st.booleans()})),
    "user": field(st.text(max_size=10)),
    "ignore_eos": field(st.booleans()),
    "min_tokens": field(st.integers(-2, 6)),
    "stop_token_ids": field(st.lists(st.integers(-2, 2**40), max_size=3)),
    "top_k": field(st.integers(-2, 3)),
    "repetition_penalty": field(NUMBER),
    "logit_bias": ANY_JSON,
}
OBJECT_BODY = st.fixed_dictionaries({}, optional=FIELDS).map(lambda b: json.dumps(b, allow_nan=True).encode())
VALID_BODY = st.fixed_dictionaries(  # valid on both routes (each ignores the other's field): 200s
    {"model": st.sampled_from(["teacher", "student", "ab"]), "prompt": st.text(min_size=1, max_size=40),
     "messages": st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=40)}),
                          min_size=1, max_size=2),
     "max_tokens": st.integers(1, 3)},
    optional={"temperature": st.floats(0, 2), "stream": st.booleans(), "n": st.integers(1, 2)},
).map(lambda b: json.dumps(b).encode())
BODY = st.one_of(
    OBJECT_BODY, OBJECT_BODY, OBJECT_BODY, VALID_BODY,  # the schema's fields, most of the time
    ANY_JSON.map(lambda b: json.dumps(b, allow_nan=True).encode()),  # not an object
    st.binary(max_size=200),  # bad JSON, bad UTF-8
    st.integers(100, 200_000).map(lambda depth: b"[" * depth + b"]" * depth),  # nested past any parser's stack
)


@dataclass(frozen=True)
class Hostile:
    path: str
    body: bytes
    headers: dict[str, str]


def requests(key: str) -> st.SearchStrategy[Hostile]:
    """A request to one of the generating routes: authorised mostly; sometimes no key, a wrong one, or a
    100 kB header."""
    auth = {"Authorization": f"Bearer {key}"}
    headers = st.one_of(st.just(auth), st.just(auth), st.just(auth), st.just({}),
                        st.just({"Authorization": "Bearer wrong"}), st.just(auth | {"X-Filler": "a" * 100_000}))
    return st.builds(Hostile, st.sampled_from(["/v1/completions", "/v1/chat/completions"]), BODY, headers)
