"""The model arms: one Ray Serve deployment per arm behind the A/B router, or, for an arm served alone,
the arm's model inside the router's own replica (no hop between them); either runs the engine the
driver chose for it."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields

from ray import serve
from ray.serve.handle import DeploymentHandle

from raykd.config import ServeConfig, section
from serving.admission import Admission
from serving.chunks import coalesce, merge
from serving.engine_hf import GenerationRequest
from serving.protocol import MAX_LOGPROBS


@serve.deployment
class ModelServer:
    """A replica holding one model; ``stream`` yields ``serving.chunks.chunk`` dicts (the steps made
    within ``serve.stream_interval_s`` merged into one), ``generate`` returns the whole answer as one.
    Each generation holds one of the model's ``serve.max_ongoing_requests`` places while it runs, up to
    ``serve.max_queued_requests`` wait for one, and the next raises ``QueueFull``.

    ``engine`` ("vllm" or "transformers") is decided on the driver (``raykd.vllm_support``): a replica
    whose GPUs live in placement-group bundles sees no CUDA itself."""

    def __init__(self, model_dir: str, tokenizer_dir: str, engine: str, arm: str, settings: dict,
                 trust_remote_code: bool = False):
        s = section(ServeConfig, settings)
        self.stream_interval_s = s.stream_interval_s
        self.admission = Admission(s.max_ongoing_requests, s.max_queued_requests)
        if engine == "vllm":
            from serving.engine_vllm import VLLMEngine

            self.engine = VLLMEngine(model_dir, tokenizer_dir, s.arm_vllm(arm), trust_remote_code, MAX_LOGPROBS)
        else:
            from serving.engine_hf import TransformersEngine

            self.engine = TransformersEngine(model_dir, tokenizer_dir, s.max_batch_size, trust_remote_code)

    async def stream(self, request: dict) -> AsyncIterator[dict]:
        async with self.admission.place():
            async for c in coalesce(self.engine.stream(GenerationRequest(**request)), self.stream_interval_s):
                yield c

    async def generate(self, request: dict) -> dict:
        """The whole answer of a request that is not streamed: one reply instead of one per token."""
        async with self.admission.place():
            return merge([c async for c in self.engine.stream(GenerationRequest(**request))])

    async def engine_stats(self) -> dict:
        """Which replica and engine answer, the engine's batching so far and the model's queue now (an
        arm's replicas each keep their own)."""
        return ({"replica_id": serve.get_replica_context().replica_id.unique_id} | self.engine.stats()
                | {"queue": self.admission.stats()})

    async def check_health(self) -> None:
        result = self.engine.check_health()
        if inspect.isawaitable(result):
            await result


@dataclass(frozen=True)
class ArmSpec:
    """What an arm's ``ModelServer`` is built from (its constructor's arguments)."""

    model_dir: str
    tokenizer_dir: str
    engine: str
    arm: str
    settings: dict
    trust_remote_code: bool = False

    def arguments(self) -> dict:
        """``ModelServer``'s keyword arguments (the fields share its parameters' names)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def deployment(self, options: dict):
        """The arm as a deployment of its own, for the router to reach through a handle."""
        return ModelServer.options(**options).bind(**self.arguments())

    def load(self) -> ModelServer:
        """The arm's model in this process (the router's replica, when the arm is served alone)."""
        return ModelServer.func_or_class(**self.arguments())


class RemoteArm:
    """An arm in its own deployment, reached through its handle with the same methods as a ``ModelServer``
    (a handle call goes to the least busy replica; a full queue raises ``BackPressureError``)."""

    def __init__(self, handle: DeploymentHandle):
        self.handle, self.streaming = handle, handle.options(stream=True)

    def stream(self, request: dict) -> AsyncIterator[dict]:
        """``ModelServer.stream`` on a replica; a full queue raises ``BackPressureError`` here."""
        return self.streaming.stream.remote(request)

    async def generate(self, request: dict) -> dict:
        """``ModelServer.generate`` on a replica."""
        return await self.handle.generate.remote(request)

    async def engine_stats(self) -> dict:
        """``ModelServer.engine_stats`` of the replica the call reached."""
        return await self.handle.engine_stats.remote()

    async def check_health(self) -> None:
        """Serve checks the arm's own replicas."""


def arm_client(arm: DeploymentHandle | ArmSpec) -> RemoteArm | ModelServer:
    """What the router calls an arm through: its handle, or the model itself loaded here."""
    return arm.load() if isinstance(arm, ArmSpec) else RemoteArm(arm)


# Ray Serve's "throughput optimised" switches that concern one replica, set in each of ours (runtime_env:
# they are read when the replica's process imports Serve, so they hold on any cluster): user code on the
# replica's own event loop (not a second loop in a thread, one hop less per request and per streamed
# message), the handles' router on that loop too, and request-log lines written in batches (an ERROR
# line still goes out at once). Measured in bench/serve_overhead.py (`serve_env`).
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
               "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000"}


def replica_actor_options(num_cpus: float, num_gpus: float = 0) -> dict:
    """``ray_actor_options`` of a raykd replica (an arm's or the router's)."""
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "runtime_env": {"env_vars": dict(REPLICA_ENV)}}


def arm_options(name: str, s: ServeConfig, engine: str) -> dict:
    """Deployment options of one arm (its own deployment, or the ingress holding it alone): autoscaling,
    queue limits, health checks, CPU/GPU asks (with tensor parallelism, a placement group: the replica's
    CPU bundle plus one GPU bundle per shard)."""
    options = {
        "name": name,
        "autoscaling_config": {"min_replicas": s.min_replicas, "initial_replicas": max(1, s.min_replicas),
                               "max_replicas": s.max_replicas, "target_ongoing_requests": s.target_ongoing_requests},
        "max_ongoing_requests": s.max_ongoing_requests, "max_queued_requests": s.max_queued_requests,
        "health_check_period_s": 10, "health_check_timeout_s": 60,
        "ray_actor_options": replica_actor_options(s.cpus_per_replica, s.gpus_per_replica),
    }
    tensor_parallel = s.arm_vllm(name).tensor_parallel if engine == "vllm" else 1
    if tensor_parallel > 1:  # vLLM's TP workers get their own GPU bundles in the replica's group
        options["ray_actor_options"] = replica_actor_options(s.cpus_per_replica)
        options["placement_group_bundles"] = [{"CPU": s.cpus_per_replica}] + [{"GPU": 1}] * tensor_parallel
    return options


# Requests the ingress of an arm alone lets in beyond its model's places and queue: the info routes,
# requests refused before they reach the model, and a burst still being routed by the proxy (which Serve
# counts as queued), so that only generations fill the model's queue and its 503s are raykd's.
INGRESS_HEADROOM = 32


def alone_options(name: str, s: ServeConfig, engine: str) -> dict:
    """Deployment options of the ingress holding an arm alone: the arm's, with Serve's request limits
    above the model's own queue (``ModelServer.admission``)."""
    room = s.max_ongoing_requests + s.max_queued_requests + INGRESS_HEADROOM
    return arm_options(name, s, engine) | {"max_ongoing_requests": room, "max_queued_requests": room}
