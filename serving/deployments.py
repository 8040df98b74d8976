"""One Ray Serve deployment per model arm, running the engine that fits its node."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import AsyncIterator

import torch
from ray import serve

from raykd.config import ServeConfig
from serving.engine_hf import GenerationRequest


def pick_engine(requested: str) -> str:
    """``auto`` → vllm where CUDA and the vllm package are present, else transformers."""
    has_vllm = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    if requested == "vllm" and not has_vllm:
        raise RuntimeError("serve.engine=vllm needs a CUDA GPU and `pip install -e '.[vllm]'` on the replica's node")
    return "vllm" if requested == "vllm" or (requested == "auto" and has_vllm) else "transformers"


@serve.deployment
class ModelServer:
    """A replica holding one model; ``stream`` yields ``{"text", "new_tokens", "finish_reason"}`` chunks."""

    def __init__(self, model_dir: str, tokenizer_dir: str, tensor_parallel: int, settings: dict,
                 trust_remote_code: bool = False):
        s = ServeConfig(**settings)
        self.engine_name = pick_engine(s.engine)
        if self.engine_name == "vllm":
            from serving.engine_vllm import VLLMEngine

            self.engine = VLLMEngine(model_dir, tokenizer_dir, tensor_parallel, trust_remote_code)
        else:
            from serving.engine_hf import TransformersEngine

            self.engine = TransformersEngine(model_dir, tokenizer_dir, s.max_batch_size, s.batch_wait_s,
                                             trust_remote_code)

    async def stream(self, request: dict) -> AsyncIterator[dict]:
        async for c in self.engine.stream(GenerationRequest(**request)):
            yield c

    def engine_stats(self) -> dict:
        """Which engine this replica runs, and its batching so far."""
        return self.engine.stats()

    async def check_health(self) -> None:
        result = self.engine.check_health()
        if inspect.isawaitable(result):
            await result


def arm_options(name: str, s: ServeConfig, tensor_parallel: int) -> dict:
    """Deployment options of one arm: autoscaling, queue limits, health checks, CPU/GPU asks (with
    tensor parallelism, a placement group: the replica's CPU bundle plus one GPU bundle per shard)."""
    options = {
        "name": name,
        "autoscaling_config": {"min_replicas": s.min_replicas, "initial_replicas": max(1, s.min_replicas),
                               "max_replicas": s.max_replicas, "target_ongoing_requests": s.target_ongoing_requests},
        "max_ongoing_requests": s.max_ongoing_requests, "max_queued_requests": s.max_queued_requests,
        "health_check_period_s": 10, "health_check_timeout_s": 60,
        "ray_actor_options": {"num_cpus": s.cpus_per_replica, "num_gpus": s.gpus_per_replica},
    }
    if tensor_parallel > 1:  # vLLM's TP workers get their own GPU bundles in the replica's group
        options["ray_actor_options"] = {"num_cpus": s.cpus_per_replica, "num_gpus": 0}
        options["placement_group_bundles"] = [{"CPU": s.cpus_per_replica}] + [{"GPU": 1}] * tensor_parallel
    return options
