"""Serving costs, side by side in one Ray session: the A/B ingress's added latency, and what
request batching buys the transformers engine.

    python bench/serve_overhead.py [--requests 40] [--out bench/results/serve_overhead.json]

1. p50 latency of the same short completion (greedy, 4 tokens) to the student via (a) its deployment
   handle directly, (b) HTTP through the router naming the arm, (c) HTTP through the router with
   ``model: "ab"`` (split 100% to the student): the added milliseconds are the ingress's cost.
2. Output tokens/s of the teacher at concurrency 16 with ``serve.max_batch_size`` 8 vs 1 (unbatched).
Uses the built-in base models (no training needed); the app is redeployed between settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx
from ray import serve

from raykd.config import load_config
from raykd.launch import init_ray
from raykd.models import resolve_tokenizer
from raykd.tokens import encode_lm_row, load_tokenizer
from serving.app import APP_NAME, BUILTIN_ARMS, start
from serving.compare import level
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


async def batched_throughput(url: str, concurrency: int, requests: int) -> float:
    async with httpx.AsyncClient(timeout=120) as client:
        figures = await level(client, url, "teacher", [PROMPT] * requests, concurrency, 12)
    return figures["output_tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_overhead.json"))
    args = parser.parse_args()
    init_ray()
    cfg = config(student_weight=1.0)
    url = start(cfg)
    prompt_ids = encode_lm_row(load_tokenizer(resolve_tokenizer(cfg.models)), PROMPT, None, 10**9)[0]
    p50 = asyncio.run(ingress_overhead(url, args.requests, prompt_ids))
    throughput = {}
    for batch in (8, 1):
        url = start(config(max_batch_size=batch))
        asyncio.run(batched_throughput(url, 4, 8))  # warm-up after the redeploy
        throughput[batch] = asyncio.run(batched_throughput(url, 16, 64))
    serve.shutdown()
    report = {
        "p50_s": p50, "router_added_ms_named": 1000 * (p50["http_named"] - p50["handle"]),
        "router_added_ms_ab": 1000 * (p50["http_ab"] - p50["handle"]),
        "teacher_tokens_per_s_c16": {"batched_8": throughput[8], "unbatched": throughput[1]},
        "batched_over_unbatched": throughput[8] / throughput[1],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\np50: handle {1000 * p50['handle']:.1f} ms, HTTP by name {1000 * p50['http_named']:.1f} ms, HTTP ab "
          f"{1000 * p50['http_ab']:.1f} ms -> ingress adds {report['router_added_ms_named']:.1f} / "
          f"{report['router_added_ms_ab']:.1f} ms\nteacher at concurrency 16: batched {throughput[8]:.0f} tok/s vs "
          f"unbatched {throughput[1]:.0f} tok/s = {report['batched_over_unbatched']:.2f}x -> {args.out}")


if __name__ == "__main__":
    main()
