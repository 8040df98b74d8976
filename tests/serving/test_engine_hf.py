"""The transformers engine's continuous batching: requests that join a running batch, leave it at
different steps or are abandoned decode exactly as Hugging Face's own greedy generate, one at a time
(the built-in student, and random-init models of several families, whose near-uniform logits turn any
misaligned cache column into a different token)."""

import asyncio

import pytest
import torch

from raykd.builtin.presets import TOKENIZER_DIR
from raykd.data.tokens import encode_lm_row
from raykd.models.load import resolve_model
from serving.engine_hf import GenerationRequest, TransformersEngine
from serving.kv_batch import joinable
from tests import families

PROMPTS = ["question: what are fox and red?\nanswer:", "question: what is a cat?\nanswer:", "hello",
           "question: what kind of thing is a dog?\nanswer:"]


@pytest.fixture(scope="module")
def family_root(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


def make_engine(max_batch_size: int = 8, family: str = "builtin", root=None) -> TransformersEngine:
    if family == "builtin":
        return TransformersEngine(resolve_model("builtin:student"), str(TOKENIZER_DIR), max_batch_size)
    model_dir = str(families.build(family, root))
    return TransformersEngine(model_dir, model_dir, max_batch_size)


def reference(engine: TransformersEngine, request: GenerationRequest) -> list[int]:
    """One prompt at a time, no padding: Hugging Face's greedy generate, stopping where the engine does."""
    out = engine.model.generate(torch.tensor([request.prompt_ids]), max_new_tokens=request.max_tokens,
                                do_sample=False, eos_token_id=sorted(engine.stop_ids),
                                pad_token_id=engine.tokenizer.pad_token_id)
    return out[0, len(request.prompt_ids):].tolist()


async def answer(engine: TransformersEngine, request: GenerationRequest, delay_steps: int = 0) -> dict:
    """Join after the engine has decoded ``delay_steps`` steps; the whole answer."""
    while engine.steps < delay_steps:
        await asyncio.sleep(0.001)
    text, count, finish = "", 0, None
    async for c in engine.stream(request):
        text, count, finish = text + c["text"], count + c["new_tokens"], c["finish_reason"] or finish
    return {"text": text, "tokens": count, "finish": finish}


@pytest.mark.parametrize("family", ["builtin", *families.CAUSAL])
def test_requests_joining_and_leaving_a_running_batch_decode_as_hf_generate_alone(family, family_root):
    engine = make_engine(3, family, family_root)  # the 4th request waits for a free row
    ids = [encode_lm_row(engine.tokenizer, p, None, 10**9)[0] for p in PROMPTS]
    requests = [GenerationRequest(i, max_tokens=m, temperature=0.0) for i, m in zip(ids, (12, 4, 9, 7))]

    async def run() -> list[dict]:
        return await asyncio.gather(*(answer(engine, r, delay) for r, delay in zip(requests, (0, 2, 3, 0))))

    answers = asyncio.run(run())
    can_join = joinable(engine.model(torch.tensor([ids[0]]), use_cache=True).past_key_values)
    for request, got in zip(requests, answers):
        new = reference(engine, request)
        assert got["text"] == engine.tokenizer.decode(new, skip_special_tokens=True)
        assert got["tokens"] == len(new)
        assert got["finish"] == ("stop" if new[-1] in engine.stop_ids else "length")
    stats = engine.stats()
    assert stats["joined_running_batch"] >= 2 if can_join else stats["joined_running_batch"] == 0
    assert stats["largest_batch"] == 3
    assert stats["running"] == 0 and stats["waiting"] == 0


def test_an_abandoned_request_leaves_the_batch_at_the_next_step():
    engine = make_engine()
    engine.stop_ids = set()  # never ends early: only abandoning it can stop it before max_tokens
    ids = encode_lm_row(engine.tokenizer, PROMPTS[0], None, 10**9)[0]

    async def run() -> None:
        stream = engine.stream(GenerationRequest(ids, max_tokens=40, temperature=0.0))
        await anext(stream)
        await stream.aclose()  # what Serve does when the HTTP client goes away
        await engine.loop

    asyncio.run(run())
    assert engine.steps <= 3 and engine.batch is None


def test_ignore_eos_min_tokens_and_stop_token_ids_decode_as_hf_generate_with_them():
    """vLLM's sampling extensions on the transformers engine, batched together, against Hugging Face's own
    ``min_new_tokens`` / ``eos_token_id``: the greedy answer runs past its stop id, holds it back for
    ``min_tokens``, or ends at a stop id the request names."""
    engine = make_engine()
    prompt = encode_lm_row(engine.tokenizer, PROMPTS[0], None, 10**9)[0]
    free = reference(engine, GenerationRequest(prompt, max_tokens=24, temperature=0.0))
    assert free[-1] in engine.stop_ids and len(free) < 12  # the greedy answer ends early at a stop id
    stop_at = free[1]  # the answer's second token, named as a stop id
    cases = [(GenerationRequest(prompt, 24, 0.0, ignore_eos=True), dict(eos_token_id=None)),
             (GenerationRequest(prompt, 24, 0.0, min_tokens=len(free) + 3),
              dict(min_new_tokens=len(free) + 3, eos_token_id=sorted(engine.stop_ids))),
             (GenerationRequest(prompt, 24, 0.0, stop_token_ids=[stop_at]),
              dict(eos_token_id=sorted(engine.stop_ids | {stop_at})))]

    async def run() -> list[dict]:
        return await asyncio.gather(*(answer(engine, request) for request, _ in cases))

    answers = asyncio.run(run())
    for (_, hf), got in zip(cases, answers):
        new = engine.model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                                    pad_token_id=engine.tokenizer.pad_token_id, **hf)[0, len(prompt):].tolist()
        assert got["text"] == engine.tokenizer.decode(new, skip_special_tokens=True) and got["tokens"] == len(new)
    ignored, held, named = answers
    assert ignored["tokens"] == 24 and ignored["finish"] == "length"
    assert held["tokens"] > len(free) and named == {"text": named["text"], "tokens": 2, "finish": "stop"}
