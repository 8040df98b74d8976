"""The OpenAI-compatible ingress: validates requests, routes them to an arm (by name or by the
weighted A/B split), streams or gathers the answer, and keeps per-arm statistics."""

# No `from __future__ import annotations` here: FastAPI must see the real `Request` annotations
# of the ingress methods, which Serve re-binds outside this module.
import asyncio
import hmac
import logging
import random
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram
from starlette.exceptions import HTTPException

from raykd.config import ServeConfig, section
from raykd.data.tokens import load_tokenizer
from serving import protocol
from serving.admission import QueueFull
from serving.chunks import merge
from serving.deployments import ArmSpec, arm_client
from serving.protocol import ApiError, ChatRequest, CompletionRequest
from serving.routing import ArmStats, ShadowStats, choose_arm

api = FastAPI(title="raykd", docs_url=None, redoc_url=None)
LOG = logging.getLogger("ray.serve")
LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


@api.exception_handler(ApiError)
async def _api_error(_: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


@api.exception_handler(RequestValidationError)
async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:  # FastAPI's 422, as an OpenAI 400
    first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
    field = ".".join(str(p) for p in first["loc"])
    return JSONResponse(ApiError(400, f"'{field}': {first['msg']}", field).body(), 400)


@api.exception_handler(HTTPException)
async def _http(_: Request, error: HTTPException) -> JSONResponse:  # unknown path (404), wrong method (405)
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    return JSONResponse(ApiError(error.status_code, str(error.detail), kind=kind).body(), error.status_code)


@api.exception_handler(Exception)
async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    """Never a stack trace or an exception's name on the wire: the server's log has them."""
    LOG.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse(ApiError(500, "internal error (see the server log)", kind="server_error").body(), 500)


@serve.deployment
@serve.ingress(api)
class Router:
    """``arms``: name → the arm's deployment handle, or (an arm served alone) its ``ArmSpec``, whose model
    this replica then loads and calls with no hop between them."""

    def __init__(self, arms: dict[str, DeploymentHandle | ArmSpec], weights: dict[str, float],
                 engines: dict[str, str], tokenizer_dir: str, context: int, settings: dict,
                 trust_remote_code: bool = False):
        self.s = section(ServeConfig, settings)
        self.arms = {name: arm_client(arm) for name, arm in arms.items()}
        self.weights, self.engines = weights, engines
        self.tokenizer = load_tokenizer(tokenizer_dir, trust_remote_code)
        self.context = context
        self.limits = protocol.Limits(self.s.max_tokens, self.s.max_n)
        self.api_key = self.s.api_key()
        self.rng = random.Random()
        self.stats = {name: ArmStats() for name in arms}
        self.shadow = ShadowStats()
        self.background: set[asyncio.Task] = set()
        self.m_requests = Counter("raykd_requests", "requests answered per arm", tag_keys=("arm",))
        self.m_latency = Histogram("raykd_latency_s", "request latency per arm", LATENCY_BUCKETS, tag_keys=("arm",))
        self.m_ttft = Histogram("raykd_ttft_s", "time to first token per arm", LATENCY_BUCKETS, tag_keys=("arm",))

    # -- requests -----------------------------------------------------------------------------------
    async def _body(self, request: Request) -> bytes:
        """Authorise (constant-time key check) and read the body, refusing one over the size limit."""
        if self.api_key:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                raise ApiError(401, "invalid or missing API key (Authorization: Bearer …)", kind="authentication_error")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.s.max_body_bytes:
            raise ApiError(413, f"request body over {self.s.max_body_bytes} bytes")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > self.s.max_body_bytes:
                raise ApiError(413, f"request body over {self.s.max_body_bytes} bytes")
        return bytes(body)

    def _prompt_ids(self, request, max_tokens: int) -> list[int]:
        ids = protocol.prompt_ids(self.tokenizer, request)
        if len(ids) + max_tokens > self.context:
            raise ApiError(400, f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds the context of "
                                f"{self.context} tokens", "messages" if isinstance(request, ChatRequest) else "prompt")
        return ids

    def _arm(self, request) -> str:
        try:
            return choose_arm(request.model, request.user, self.weights, self.s.ab_alias, self.rng)
        except KeyError:
            raise ApiError(404, f"model '{request.model}' does not exist; try one of "
                                f"{[*self.arms, self.s.ab_alias]}", "model", kind="not_found_error") from None

    async def _replies(self, arm: str, generation: dict, stream: bool) -> AsyncIterator[dict]:
        """The arm's chunks as it makes them, or (``stream=False``) its whole answer as one chunk."""
        if stream:
            async for c in self.arms[arm].stream(generation):
                yield c
        else:
            yield await self.arms[arm].generate(generation)

    async def _generate(self, arm: str, generation: dict, stream: bool = True) -> AsyncIterator[dict]:
        """Chunks from the arm, timing the request into its statistics and metrics."""
        started, first, tokens = time.perf_counter(), None, 0
        try:
            async for c in self._replies(arm, generation, stream):
                first = first or time.perf_counter()
                tokens += c["new_tokens"]
                yield c
        except (BackPressureError, QueueFull):  # Serve's queue before an arm's deployment, or the model's own
            self.stats[arm].errors += 1
            raise ApiError(503, f"model '{arm}' is overloaded (queue full); retry later", kind="server_error") from None
        latency = time.perf_counter() - started
        ttft = (first or time.perf_counter()) - started
        self.stats[arm].record(latency, ttft, tokens)
        self.m_requests.inc(tags={"arm": arm})
        self.m_latency.observe(latency, tags={"arm": arm})
        self.m_ttft.observe(ttft, tags={"arm": arm})

    async def _collect(self, arm: str, generation: dict) -> tuple[str, str | None, list | None, int]:
        """The whole answer: text, finish reason, log-prob entries (None unless asked for), tokens."""
        answer = merge([c async for c in self._generate(arm, generation, stream=False)])
        return answer["text"], answer["finish_reason"], answer["logprobs"], answer["new_tokens"]

    def _check_engine(self, arm: str, generation: dict) -> None:
        """``seed``, ``logprobs`` and vLLM's other sampling fields (``protocol.VLLM_ONLY``) are vLLM's: a
        transformers arm refuses them rather than ignore them."""
        if self.engines[arm] == "vllm":
            return
        asked = [name for name in ("seed", "logprobs") if generation[name] is not None]
        for name in [*asked, *generation["vllm_sampling"]]:
            raise ApiError(400, f"'{name}' needs the vLLM engine; model '{arm}' runs {self.engines[arm]} "
                                "(serve.engine=vllm)", name)

    def _shadow(self, arm: str, generation: dict, answer: str) -> None:
        """Send the request to the other arm in the background and record whether it agrees."""
        other = next(a for a in self.arms if a != arm)

        async def compare() -> None:
            text = (await self._collect(other, generation))[0]
            self.shadow.record(answer, text)

        task = asyncio.create_task(compare())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _answer(self, http: Request, cls) -> JSONResponse | StreamingResponse:
        request = protocol.parse(cls, await self._body(http))
        max_tokens = protocol.check(request, self.limits)
        arm = self._arm(request)
        generation = protocol.generation(request, self._prompt_ids(request, max_tokens), max_tokens)
        self._check_engine(arm, generation)
        chat, rid = cls is ChatRequest, protocol.new_id(cls is ChatRequest)
        shadowing = self.s.shadow and request.model == self.s.ab_alias
        headers = {"x-raykd-arm": arm}
        if request.stream:
            include_usage = bool((request.stream_options or {}).get("include_usage"))
            events = self._events(chat, rid, arm, generation, include_usage, shadowing)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        results = await asyncio.gather(*(self._collect(arm, generation) for _ in range(request.n)))
        if shadowing:
            self._shadow(arm, generation, results[0][0])
        use = protocol.usage(len(generation["prompt_ids"]), sum(r[3] for r in results))
        body = protocol.response(chat, rid, arm, [r[:3] for r in results], use)
        return JSONResponse(body, headers=headers)

    async def _events(self, chat: bool, rid: str, arm: str, generation: dict, include_usage: bool,
                      shadowing: bool) -> AsyncIterator[str]:
        if chat:
            yield protocol.stream_chunk(chat, rid, arm, None, None)
        text, tokens = "", 0
        try:
            async for c in self._generate(arm, generation):
                logprobs = protocol.logprobs_body(chat, c.get("logprobs"), len(text))
                text, tokens = text + c["text"], tokens + c["new_tokens"]
                if c["text"] or c["finish_reason"] or logprobs:
                    yield protocol.stream_chunk(chat, rid, arm, c["text"], c["finish_reason"], logprobs=logprobs)
        except ApiError as e:  # headers are sent: report the error in the stream
            yield protocol.error_event(e)
        if include_usage:
            use = protocol.usage(len(generation["prompt_ids"]), tokens)
            yield protocol.stream_chunk(chat, rid, arm, None, None, use)
        yield protocol.DONE
        if shadowing:
            self._shadow(arm, generation, text)

    async def check_health(self) -> None:
        """Serve's health check of this replica: the engines of the arms it holds itself."""
        await asyncio.gather(*(arm.check_health() for arm in self.arms.values()))

    # -- routes -------------------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Up, with each arm's replicas by state (e.g. ``{"RUNNING": 2}``) as the Serve controller sees them."""
        app = serve.get_replica_context().app_name
        status = await asyncio.to_thread(serve.status)  # a controller call: off the event loop
        deployments = status.applications[app].deployments
        return {"status": "ok", "arms": list(self.arms),
                "replicas": {arm: {str(getattr(state, "value", state)): n
                                   for state, n in deployments[arm].replica_states.items()}
                             for arm in self.arms if arm in deployments}}

    @api.get("/v1/models")
    async def models(self, http: Request) -> dict:
        await self._body(http)
        created = int(time.time())
        names = [*self.arms, self.s.ab_alias]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "raykd"}
                                           for n in names]}

    @api.post("/v1/completions")
    async def completions(self, http: Request):
        return await self._answer(http, CompletionRequest)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, http: Request):
        return await self._answer(http, ChatRequest)

    @api.get("/v1/ab/stats")
    async def ab_stats(self, http: Request) -> dict:
        await self._body(http)
        engines = await asyncio.gather(*(arm.engine_stats() for arm in self.arms.values()))
        return {"weights": self.weights,
                "arms": {a: s.summary() | {"engine": self.engines[a], "replica": e}
                         for (a, s), e in zip(self.stats.items(), engines)},
                "shadow": self.shadow.summary() if self.s.shadow else None}
