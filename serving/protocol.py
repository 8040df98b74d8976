"""The OpenAI wire format: request models, their checks (400s with OpenAI error objects), and the
response and stream-chunk shapes. Pure: no Ray, no model."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from raykd.data.chat import ChatError
from raykd.data.examples import prompt_ids as example_prompt_ids

MAX_LOGPROBS = 20  # alternatives per generated token a request may ask for (vLLM's max_logprobs)
MAX_STOPS = 4
# Sampling fields only vLLM's sampler implements, with their no-op values: a transformers arm refuses any
# other value rather than ignore it.
VLLM_ONLY = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
             "frequency_penalty": 0.0}

class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status; never a stack trace."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


class _Request(BaseModel):
    # OpenAI clients send fields we do not use (logit_bias, …); NaN and ±inf are no number a sampler takes
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stream: bool = False
    user: str | None = None
    stream_options: dict | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    # vLLM's sampling extensions, as its OpenAI server takes them (``VLLM_ONLY``: a transformers arm refuses
    # them; the rest both engines honour)
    ignore_eos: bool = False
    min_tokens: int = 0
    stop_token_ids: list[int] | None = None
    top_k: int = -1
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def top_logprobs_asked(self) -> int | None:
        """Alternatives per generated token the client wants (None: no log-probs)."""
        return None


class CompletionRequest(_Request):
    prompt: str | list[str]
    logprobs: int | None = None

    def top_logprobs_asked(self) -> int | None:
        return self.logprobs


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    """One OpenAI chat message: content is text, a list of text parts, or null (an assistant turn of
    ``tool_calls``); its other fields (``tool_calls``, ``name``, ...) reach the chat template as sent, and
    ``raykd.data.chat.conversation`` checks the whole as training does."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[TextPart] | None  # required; null for an assistant turn of tool_calls


class ChatRequest(_Request):
    max_completion_tokens: int | None = None
    messages: list[Message]
    logprobs: bool = False
    top_logprobs: int | None = None

    def top_logprobs_asked(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


@dataclass(frozen=True)
class Limits:
    max_tokens: int
    max_n: int
    default_max_tokens: int = 16


def parse(cls: type[_Request], body: bytes) -> _Request:
    """JSON body → request model; malformed JSON or fields are a 400 naming the field."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ApiError(400, f"'{field}': {first['msg']}", param=field) from None


def check(request: _Request, limits: Limits) -> int:
    """Range checks shared by both endpoints; returns the max_tokens to use."""
    max_tokens = getattr(request, "max_completion_tokens", None) or request.max_tokens
    max_tokens = limits.default_max_tokens if max_tokens is None else max_tokens
    if not 1 <= max_tokens <= limits.max_tokens:
        raise ApiError(400, f"max_tokens must be between 1 and {limits.max_tokens}, got {max_tokens}", "max_tokens")
    if request.temperature < 0 or request.temperature > 2:
        raise ApiError(400, f"temperature must be between 0 and 2, got {request.temperature}", "temperature")
    if not 0 < request.top_p <= 1:
        raise ApiError(400, f"top_p must be in (0, 1], got {request.top_p}", "top_p")
    if not 1 <= request.n <= limits.max_n:
        raise ApiError(400, f"n must be between 1 and {limits.max_n}, got {request.n}", "n")
    if request.n > 1 and request.stream:
        raise ApiError(400, "n > 1 is not supported with stream: true", "n")
    if isinstance(request, ChatRequest) and not request.messages:
        raise ApiError(400, "messages must not be empty", "messages")
    if isinstance(request, CompletionRequest):
        prompts = request.prompt if isinstance(request.prompt, list) else [request.prompt]
        if len(prompts) != 1 or not prompts[0]:
            raise ApiError(400, "prompt must be one non-empty string", "prompt")
    stops = stop_strings(request)
    if len(stops) > MAX_STOPS or not all(stops):
        raise ApiError(400, f"stop must be at most {MAX_STOPS} non-empty strings", "stop")
    if request.seed is not None and not 0 <= request.seed < 2**63:
        raise ApiError(400, f"seed must be between 0 and 2**63 - 1, got {request.seed}", "seed")
    check_extensions(request, max_tokens)
    top = request.top_logprobs_asked()
    if top is not None and not 0 <= top <= MAX_LOGPROBS:
        name = "top_logprobs" if isinstance(request, ChatRequest) else "logprobs"
        raise ApiError(400, f"{name} must be between 0 and {MAX_LOGPROBS}, got {top}", name)
    return max_tokens


def check_extensions(request: _Request, max_tokens: int) -> None:
    """vLLM's ranges for its sampling extensions, checked before any arm sees them."""
    r = request
    for name, ok, expected in (("min_tokens", 0 <= r.min_tokens <= max_tokens, f"between 0 and {max_tokens}"),
                               ("top_k", r.top_k == -1 or r.top_k >= 1, "-1 (off) or >= 1"),
                               ("min_p", 0 <= r.min_p <= 1, "between 0 and 1"),
                               ("repetition_penalty", 0 < r.repetition_penalty <= 2, "in (0, 2]"),
                               ("presence_penalty", -2 <= r.presence_penalty <= 2, "between -2 and 2"),
                               ("frequency_penalty", -2 <= r.frequency_penalty <= 2, "between -2 and 2"),
                               ("stop_token_ids", all(t >= 0 for t in r.stop_token_ids or []), "token ids >= 0")):
        if not ok:
            raise ApiError(400, f"{name} must be {expected}, got {getattr(r, name)}", name)


def stop_strings(request: _Request) -> list[str]:
    return [request.stop] if isinstance(request.stop, str) else list(request.stop or [])


def generation(request: _Request, prompt_ids: list[int], max_tokens: int) -> dict:
    """The engine-neutral ``serving.engine_hf.GenerationRequest`` fields of a checked request."""
    extensions = {name: getattr(request, name) for name, off in VLLM_ONLY.items() if getattr(request, name) != off}
    return {"prompt_ids": prompt_ids, "max_tokens": max_tokens, "temperature": request.temperature,
            "top_p": request.top_p, "stop": stop_strings(request), "seed": request.seed,
            "logprobs": request.top_logprobs_asked(), "ignore_eos": request.ignore_eos,
            "min_tokens": request.min_tokens, "stop_token_ids": list(request.stop_token_ids or []),
            "vllm_sampling": extensions}


def logprobs_body(chat: bool, entries: list[dict] | None, offset: int = 0) -> dict | None:
    """Engine log-prob entries (``{"token", "logprob", "top": [(text, logprob)]}`` per generated token)
    in OpenAI's shape: chat's ``{"content": [...]}`` or the legacy completions arrays; ``offset`` is the
    completion's text length before these tokens (``text_offset``)."""
    if entries is None:
        return None
    if chat:
        def item(text: str, lp: float) -> dict:
            return {"token": text, "logprob": lp, "bytes": list(text.encode())}

        return {"content": [item(e["token"], e["logprob"]) | {"top_logprobs": [item(t, lp) for t, lp in e["top"]]}
                            for e in entries]}
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [dict(e["top"]) for e in entries], "text_offset": offsets}


def prompt_ids(tokenizer, request: ChatRequest | CompletionRequest) -> list[int]:
    """The ids the engine continues: a chat request's conversation up to the assistant's header, or a
    completion request's prompt, encoded as training encodes them (``raykd.data.examples.prompt_ids``)."""
    if isinstance(request, CompletionRequest):
        return example_prompt_ids(tokenizer, request.prompt[0] if isinstance(request.prompt, list) else request.prompt,
                                  10**9)
    if not tokenizer.chat_template:
        raise ApiError(400, "this model's tokenizer has no chat template: use /v1/completions", "messages")
    try:
        return example_prompt_ids(tokenizer, [m.model_dump(exclude_none=True) for m in request.messages], 10**9)
    except ChatError as e:
        raise ApiError(400, f"messages: {e}", "messages") from None


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def response(chat: bool, rid: str, model: str, choices: list[tuple[str, str | None, list | None]],
             use: dict) -> dict:
    """A whole (non-streaming) answer; ``choices`` are ``(text, finish_reason, log-prob entries or None)``."""
    if chat:
        shaped = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                   "logprobs": logprobs_body(True, entries)} for i, (text, finish, entries) in enumerate(choices)]
    else:
        shaped = [{"index": i, "text": text, "finish_reason": finish, "logprobs": logprobs_body(False, entries)}
                  for i, (text, finish, entries) in enumerate(choices)]
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": shaped, "usage": use}


def stream_chunk(chat: bool, rid: str, model: str, text: str | None, finish: str | None,
                 use: dict | None = None, logprobs: dict | None = None) -> str:
    """One server-sent event; ``text=None`` on a chat stream's first chunk (the assistant role);
    ``logprobs`` as ``logprobs_body`` shapes them."""
    if chat:
        delta = {"role": "assistant", "content": ""} if text is None else ({"content": text} if text else {})
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": logprobs}
    body = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": [choice] if use is None else []}
    if use is not None:
        body["usage"] = use
    return f"data: {json.dumps(body)}\n\n"


def error_event(error: ApiError) -> str:
    """An error inside a stream whose 200 headers are already sent."""
    return f"data: {json.dumps(error.body())}\n\n"


DONE = "data: [DONE]\n\n"
