"""Which engine runs a model, decided on the driver, and the vLLM engine arguments built from config."""

import pytest

from raykd import vllm_support
from raykd.config import ConfigError, VLLMConfig


@pytest.mark.parametrize("build,gpus,requested,expected", [
    ("cuda", 4.0, "auto", "vllm"),
    ("cuda", 0.0, "auto", "transformers"),
    ("cpu", 0.0, "auto", "transformers"),  # on CPUs vLLM runs only when asked for
    ("cpu", 0.0, "vllm", "vllm"),
    ("cuda", 2.0, "vllm", "vllm"),
    (None, 8.0, "auto", "transformers"),
    ("cuda", 8.0, "transformers", "transformers"),
])
def test_the_engine_follows_the_installed_build_and_the_clusters_gpus(monkeypatch, build, gpus, requested, expected):
    monkeypatch.setattr(vllm_support, "installed_build", lambda: build)
    monkeypatch.setattr(vllm_support, "cluster_gpus", lambda: gpus)
    assert vllm_support.resolve_engine(requested, "serve.engine") == expected


@pytest.mark.parametrize("build,gpus,generative,message", [
    (None, 4.0, True, "vLLM is not installed"),
    ("cuda", 0.0, True, "CUDA build and this cluster has no GPU"),
    ("cuda", 4.0, False, "generative"),
])
def test_vllm_that_cannot_run_is_a_config_error_naming_the_key(monkeypatch, build, gpus, generative, message):
    monkeypatch.setattr(vllm_support, "installed_build", lambda: build)
    monkeypatch.setattr(vllm_support, "cluster_gpus", lambda: gpus)
    with pytest.raises(ConfigError, match=message) as caught:
        vllm_support.resolve_engine("vllm", "cache.engine", generative=generative)
    assert "cache.engine" in str(caught.value)
    if not generative:  # auto quietly keeps a classifier on transformers
        assert vllm_support.resolve_engine("auto", "cache.engine", generative=False) == "transformers"


def test_engine_arguments_from_the_config(monkeypatch):
    monkeypatch.setattr(vllm_support, "installed_build", lambda: "cpu")
    args = vllm_support.engine_args("/m", "/t", VLLMConfig(max_model_len=64, enforce_eager=True), False, seed=3,
                                    max_logprobs=40)
    assert args["kv_cache_memory_bytes"] == vllm_support.GIB  # CPUs: 1 GiB unless set, never a share of all RAM
    assert (args["max_model_len"], args["enforce_eager"], args["seed"], args["max_logprobs"]) == (64, True, 3, 40)
    assert "distributed_executor_backend" not in args
    monkeypatch.setattr(vllm_support, "installed_build", lambda: "cuda")
    sharded = vllm_support.engine_args("/m", "/m", VLLMConfig(tensor_parallel=4, kv_cache_gib=2.5), False)
    assert sharded["distributed_executor_backend"] == "ray" and sharded["tensor_parallel_size"] == 4
    assert sharded["kv_cache_memory_bytes"] == int(2.5 * vllm_support.GIB)
    own = vllm_support.engine_args("/m", "/m", VLLMConfig(tensor_parallel=4), False, own_gpus=True)
    assert own["distributed_executor_backend"] == "mp" and "kv_cache_memory_bytes" not in own
