"""The GPU engine: vLLM's ``AsyncLLM`` (continuous batching, paged attention, tensor parallelism).

Needs ``pip install -e ".[vllm]"`` on a CUDA node; never imported on CPU-only machines. With
``tensor_parallel_size`` > 1 the replica asks for that many GPUs in its placement group and vLLM
spreads its workers over them with Ray.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from serving.engine_hf import GenerationRequest, chunk


class VLLMEngine:
    def __init__(self, model_dir: str, tokenizer_dir: str, tensor_parallel_size: int, trust_remote_code: bool = False):
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(model=model_dir, tokenizer=tokenizer_dir, tensor_parallel_size=tensor_parallel_size,
                               trust_remote_code=trust_remote_code,
                               distributed_executor_backend="ray" if tensor_parallel_size > 1 else None)
        self.engine = AsyncLLM.from_engine_args(args)

    def stats(self) -> dict:
        return {"engine": "vllm"}

    async def check_health(self) -> None:
        await self.engine.check_health()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
                                output_kind=RequestOutputKind.DELTA)
        prompt = TokensPrompt(prompt_token_ids=request.prompt_ids)
        async for out in self.engine.generate(prompt, params, request_id=uuid.uuid4().hex):
            completion = out.outputs[0]
            yield chunk(completion.text, len(completion.token_ids), completion.finish_reason)
