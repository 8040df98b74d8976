"""The vLLM engine on a GPU node (skipped without CUDA and the `vllm` extra)."""

import asyncio
import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None,
                                reason="needs a CUDA GPU and `pip install -e '.[vllm]'`")


def test_vllm_engine_streams_a_greedy_completion_like_transformers():
    from raykd.builtin.presets import TOKENIZER_DIR
    from raykd.models import resolve_model
    from raykd.tokens import encode_lm_row, load_tokenizer
    from serving.engine_hf import GenerationRequest
    from serving.engine_vllm import VLLMEngine

    model = resolve_model("builtin:teacher")
    engine = VLLMEngine(model, str(TOKENIZER_DIR), tensor_parallel_size=1)
    ids = encode_lm_row(load_tokenizer(str(TOKENIZER_DIR)), "question: what are fox and red?\nanswer:", None,
                        10**9)[0]

    async def collect():
        return [c async for c in engine.stream(GenerationRequest(ids, max_tokens=8, temperature=0.0))]

    chunks = asyncio.run(collect())
    assert sum(c["new_tokens"] for c in chunks) <= 8 and chunks[-1]["finish_reason"] in ("stop", "length")
    assert "".join(c["text"] for c in chunks)
