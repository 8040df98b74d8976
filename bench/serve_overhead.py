"""Serving costs, side by side in one run: what the served path delivers of what the model can do,
what continuous batching and merged stream events buy, and the A/B ingress's added latency.

    python bench/serve_overhead.py [--requests 40] [--out bench/results/serve_overhead.json]

1. The teacher's output tokens/s at concurrency 16 (greedy, up to 12 tokens, ended at EOS as served
   requests are): bare batched ``generate()`` of 16 rows in this process with one torch thread (what a
   0.5-CPU replica gets), the engine alone in this process (16 concurrent callers), vs served over
   HTTP (streamed, the ``raykd compare`` client) with the
   defaults, with one event per token (``serve.stream_interval_s=0``), unbatched
   (``serve.max_batch_size=1``), and with Ray Serve's own replica threading (user code in a second event
   loop: ``serving.deployments.REPLICA_ENV`` not set); and with the defaults through the deployment
   handle (no HTTP).
2. p50 latency of the same short completion (greedy, 4 tokens) to the student via (a) its deployment
   handle directly, (b) HTTP through the router naming the arm, (c) HTTP through the router with
   ``model: "ab"`` (split 100% to the student): the added milliseconds are the ingress's cost.
Uses the built-in base models (no training needed); the app is redeployed between settings.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import httpx
from ray import serve
from results_page import write_results  # sibling bench module

from raykd.config import load_config
from raykd.data.tokens import encode_lm_row, load_tokenizer
from raykd.launch import init_ray
from raykd.models.load import resolve_model, resolve_tokenizer
from serving import deployments
from serving.app import APP_NAME, BUILTIN_ARMS, start
from serving.compare import level
from serving.deployments import REPLICA_ENV
from serving.routing import percentiles

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
PROMPT = "question: what are fox and red?\nanswer:"


def config(**serve_overrides):
    overrides = [*BUILTIN_ARMS, "serve.port=8321"] + [f"serve.{k}={v}" for k, v in serve_overrides.items()]
    return load_config(DEMO, overrides)


async def ingress_overhead(url: str, requests: int, prompt_ids: list[int]) -> dict:
    """Interleaved: handle, HTTP by name, HTTP via the alias; p50 seconds of each."""
    handle = serve.get_deployment_handle("student", app_name=APP_NAME).options(stream=True)
    generation = {"prompt_ids": prompt_ids, "max_tokens": 4, "temperature": 0.0, "top_p": 1.0}
    body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0}
    times: dict[str, list[float]] = {"handle": [], "http_named": [], "http_ab": []}
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(requests + 3):  # the first three are warm-up
            started = time.perf_counter()
            _ = [c async for c in handle.stream.remote(generation)]
            handle_s = time.perf_counter() - started
            started = time.perf_counter()
            (await client.post(f"{url}/v1/completions", json=body | {"model": "student"})).raise_for_status()
            named_s = time.perf_counter() - started
            started = time.perf_counter()
            (await client.post(f"{url}/v1/completions", json=body | {"model": "ab"})).raise_for_status()
            ab_s = time.perf_counter() - started
            if i >= 3:
                for key, value in zip(times, (handle_s, named_s, ab_s)):
                    times[key].append(value)
    return {key: percentiles(values)["p50"] for key, values in times.items()}


def bare_generate(prompt_ids: list[int], rows: int = 16, max_tokens: int = 12, repeats: int = 3) -> float:
    """Output tokens/s of the teacher's own batched greedy ``generate()`` (best of ``repeats``), one thread."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(resolve_model("builtin:teacher")).eval()
    eos = model.generation_config.eos_token_id
    batch = torch.tensor([prompt_ids] * rows)
    best = 0.0
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first is warm-up
            started = time.perf_counter()
            new = model.generate(batch, max_new_tokens=max_tokens, do_sample=False)[:, len(prompt_ids):]
            wall = time.perf_counter() - started
            ended = (new == eos).long().cumsum(-1)  # tokens up to and including the first EOS count
            best = max(best, int(((ended == 0) | ((ended == 1) & (new == eos))).sum()) / wall)
    return best


async def engine_throughput(prompt_ids: list[int], concurrency: int, requests: int) -> float:
    """The same load on the transformers engine in this process (one torch thread): continuous
    batching without Ray."""
    from serving.engine_hf import GenerationRequest, TransformersEngine

    engine = TransformersEngine(resolve_model("builtin:teacher"), resolve_tokenizer(config().models), concurrency)
    queue = list(range(requests + concurrency))  # the first round is warm-up
    tokens, started = [], None

    async def caller() -> None:
        nonlocal started
        while queue:
            queue.pop()
            if len(queue) < requests and started is None:
                started = time.perf_counter()
            answer = [c["new_tokens"] async for c in engine.stream(GenerationRequest(prompt_ids, 12, 0.0))]
            tokens.append(sum(answer) if started else 0)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return sum(tokens) / (time.perf_counter() - started)


async def served_throughput(url: str, concurrency: int, requests: int) -> float:
    async with httpx.AsyncClient(timeout=120) as client:
        await level(client, url, "teacher", [PROMPT] * 8, 4, 12)  # warm-up after a redeploy
        figures = await level(client, url, "teacher", [PROMPT] * requests, concurrency, 12)
    return figures["output_tokens_per_s"]


async def handle_throughput(prompt_ids: list[int], concurrency: int, requests: int) -> float:
    """The same load through the teacher's deployment handle (streamed), without HTTP and the router."""
    handle = serve.get_deployment_handle("teacher", app_name=APP_NAME).options(stream=True)
    generation = {"prompt_ids": prompt_ids, "max_tokens": 12, "temperature": 0.0, "top_p": 1.0}
    slots = asyncio.Semaphore(concurrency)

    async def one() -> int:
        async with slots:
            return sum([c["new_tokens"] async for c in handle.stream.remote(generation)])

    await asyncio.gather(*(one() for _ in range(8)))
    started = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one() for _ in range(requests))))
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_overhead.json"))
    args = parser.parse_args()
    tokenizer = load_tokenizer(resolve_tokenizer(config().models))
    prompt_ids = encode_lm_row(tokenizer, PROMPT, None, 10**9)[0]
    bare = bare_generate(prompt_ids)
    engine_alone = asyncio.run(engine_throughput(prompt_ids, 16, 64))
    init_ray()
    settings = {"default": {}, "event_per_token": {"stream_interval_s": 0}, "unbatched": {"max_batch_size": 1},
                "serve_threads": {}}
    served, via_handle = {}, None
    for name, overrides in settings.items():
        deployments.REPLICA_ENV = {} if name == "serve_threads" else REPLICA_ENV
        url = start(config(**overrides))
        served[name] = asyncio.run(served_throughput(url, 16, 64))
        if name == "default":
            via_handle = asyncio.run(handle_throughput(prompt_ids, 16, 64))
    url = start(config(student_weight=1.0))
    p50 = asyncio.run(ingress_overhead(url, args.requests, prompt_ids))
    serve.shutdown()
    report = {
        "teacher_tokens_per_s_c16": {"bare_generate_1_thread": bare, "engine_in_process": engine_alone,
                                     "handle_default": via_handle,
                                     **{f"http_{k}": v for k, v in served.items()}},
        "served_over_bare": served["default"] / bare, "handle_over_bare": via_handle / bare,
        "engine_over_bare": engine_alone / bare,
        "merged_events_over_event_per_token": served["default"] / served["event_per_token"],
        "batched_over_unbatched": served["default"] / served["unbatched"],
        "replica_env_over_serve_threads": served["default"] / served["serve_threads"],
        "p50_s": p50, "router_added_ms_named": 1000 * (p50["http_named"] - p50["handle"]),
        "router_added_ms_ab": 1000 * (p50["http_ab"] - p50["handle"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, report)
    print(f"\nteacher tok/s at concurrency 16: bare generate {bare:.0f}; engine alone {engine_alone:.0f}; "
          f"served (HTTP) {served['default']:.0f} = "
          f"{report['served_over_bare']:.0%} of bare; handle {via_handle:.0f} = {report['handle_over_bare']:.0%}; "
          f"one event per token {served['event_per_token']:.0f} ({report['merged_events_over_event_per_token']:.2f}x "
          f"less); unbatched {served['unbatched']:.0f} ({report['batched_over_unbatched']:.2f}x less); "
          f"Serve's threading {served['serve_threads']:.0f} ({report['replica_env_over_serve_threads']:.2f}x less)\n"
          f"p50: handle {1000 * p50['handle']:.1f} ms, HTTP by name {1000 * p50['http_named']:.1f} ms, HTTP ab "
          f"{1000 * p50['http_ab']:.1f} ms -> ingress adds {report['router_added_ms_named']:.1f} / "
          f"{report['router_added_ms_ab']:.1f} ms -> {args.out}")

if __name__ == "__main__":
    main()
