"""Stage 6, compare: the same prompts to the teacher and the student over HTTP at several concurrency levels.

    raykd compare --config configs/demo.yaml                    # deploys the app, measures, shuts it down
    raykd compare --config configs/demo.yaml --url http://127.0.0.1:8000   # against a running `raykd serve`
    raykd compare --config configs/demo.yaml "serve.compare_concurrency=[1,8]" serve.compare_requests=64

Every request streams (``stream: true`` with usage), so time to first token is measured as a client
sees it. Per arm and level: p50/p95/p99 latency, TTFT, output tokens/s, requests/s; and the
student/teacher speedup. Writes ``RUN/serve_compare/{compare.json, compare.md, compare.png, metrics.json}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from raykd.config import ConfigError, RaykdConfig
from raykd.data.chat import conversation, unanswered
from raykd.data.datasets import check_fields, read_dataset
from raykd.data.examples import REFERENCED_KINDS, Prompt
from raykd.launch import config_parser, load_or_fail, run_stage, write_metrics
from raykd.pipeline.console import show
from raykd.pipeline.state import STAGES
from raykd.tracking.stage import record, stage_run, tracked
from serving.routing import percentiles

WARMUP = 2


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: Prompt, max_tokens: int) -> dict:
    """Stream one completion (a text prompt to /v1/completions, a conversation to /v1/chat/completions);
    returns latency, time to the first generated text and completion tokens."""
    chat = isinstance(prompt, list)
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}} | ({"messages": prompt} if chat else {"prompt": prompt})
    started, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", f"{url}/v1/{'chat/completions' if chat else 'completions'}",
                             json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{model}: HTTP {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"{model}: {event['error']['message']}")
            choice = (event.get("choices") or [{}])[0]
            if first is None and (choice.get("text") or (choice.get("delta") or {}).get("content")):
                first = time.perf_counter()  # a chat stream opens with a chunk holding the role only
            tokens = event.get("usage", {}).get("completion_tokens", tokens)
    end = time.perf_counter()
    return {"latency": end - started, "ttft": (first or end) - started, "tokens": tokens}


async def level(client, url: str, model: str, prompts: list[Prompt], concurrency: int, max_tokens: int) -> dict:
    """All ``prompts`` against one arm with ``concurrency`` clients; the level's figures."""
    queue = list(prompts)
    results: list[dict] = []

    async def worker() -> None:
        while queue:
            results.append(await one_request(client, url, model, queue.pop(), max_tokens))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {"requests": len(results), "latency_s": percentiles([r["latency"] for r in results]),
            "ttft_s": percentiles([r["ttft"] for r in results]),
            "output_tokens_per_s": sum(r["tokens"] for r in results) / wall, "requests_per_s": len(results) / wall,
            "latencies": [r["latency"] for r in results]}


async def measure(url: str, arms: list[str], prompts: list[Prompt], levels: list[int], max_tokens: int,
                  api_key: str) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(timeout=120, headers=headers) as client:
        for arm in arms:
            await asyncio.gather(*(one_request(client, url, arm, p, max_tokens) for p in prompts[:WARMUP]))
        out: dict[str, dict] = {arm: {} for arm in arms}
        for c in levels:
            for arm in arms:  # levels outer, arms inner: both arms see the same machine state
                out[arm][str(c)] = await level(client, url, arm, prompts, c, max_tokens)
                print(f"[compare] {arm:>8} concurrency {c:>3}: p50 {out[arm][str(c)]['latency_s']['p50']:.3f}s "
                      f"{out[arm][str(c)]['output_tokens_per_s']:.0f} tok/s", flush=True)
    return out


def write_outputs(out: Path, report: dict) -> None:
    """compare.json, compare.md and compare.png (latency box plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    teacher, student = report["teacher"], report["student"]
    lines = ["# teacher vs student over HTTP", "",
             "| arm | concurrency | p50 (s) | p95 (s) | p99 (s) | TTFT p50 (s) | output tok/s | req/s |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in (teacher, student):
        for c, m in report["arms"][arm].items():
            lat, ttft = m["latency_s"], m["ttft_s"]
            lines.append(f"| {arm} | {c} | {lat['p50']:.3f} | {lat['p95']:.3f} | {lat['p99']:.3f} | {ttft['p50']:.3f} "
                         f"| {m['output_tokens_per_s']:.0f} | {m['requests_per_s']:.1f} |")
    lines += ["", "Student speedup (teacher p50 / student p50): "
              + ", ".join(f"{c}: {s:.2f}x" for c, s in report["speedup_p50"].items())]
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    levels = list(report["arms"][teacher])
    fig, ax = plt.subplots(figsize=(7, 4))
    data, labels = [], []
    for c in levels:
        for arm in (teacher, student):
            data.append(report["arms"][arm][c]["latencies"])
            labels.append(f"{arm}\nc={c}")
    ax.boxplot(data, tick_labels=labels)
    ax.set(ylabel="latency (s)", title="request latency per arm and concurrency")
    fig.tight_layout()
    fig.savefig(out / "compare.png", dpi=100)
    plt.close(fig)


def compare_prompts(cfg: RaykdConfig) -> list[Prompt]:
    """The first ``serve.compare_requests`` prompts of ``data.test``: texts, or conversations without
    their final assistant turn."""
    ds = read_dataset(cfg.data.test)
    kind = check_fields(ds, cfg.data.test, cfg.data, cfg.task, labeled=False)
    if kind not in REFERENCED_KINDS:
        raise ConfigError(f"data.test = {cfg.data.test}: compare needs prompt or conversation rows, not {kind} rows")
    rows = ds.take(cfg.serve.compare_requests)
    if kind == "prompt":
        return [r[cfg.data.prompt_field] for r in rows]
    return [unanswered(conversation(r[cfg.data.messages_field])) for r in rows]


def run(cfg: RaykdConfig, url: str | None = None) -> dict:
    """Measure both arms (deploying the app first unless ``url`` is given); returns compare.json."""
    from ray import serve

    from serving.app import start

    started = time.time()
    s = cfg.serve
    if len(s.arms) < 2:
        raise ConfigError(f"raykd compare measures the teacher against the student: serve.arms = {s.arms} deploys "
                          "one; set serve.arms=[teacher,student]")
    prompts = compare_prompts(cfg)
    own = url is None
    url = start(cfg) if own else url.rstrip("/")
    try:
        arms = asyncio.run(measure(url, [s.teacher_name, s.student_name], prompts, s.compare_concurrency,
                                   s.compare_max_tokens, s.api_key()))
    finally:
        if own:
            serve.shutdown()
    speedup = {c: arms[s.teacher_name][c]["latency_s"]["p50"] / arms[s.student_name][c]["latency_s"]["p50"]
               for c in arms[s.teacher_name]}
    report = {"teacher": s.teacher_name, "student": s.student_name, "url": url, "prompts": len(prompts),
              "max_tokens": s.compare_max_tokens, "arms": arms, "speedup_p50": speedup}
    out = cfg.stage_dir("serve_compare")
    write_outputs(out, report)
    print(f"[compare] table: {out / 'compare.md'}", flush=True)
    metrics = {"speedup_p50": speedup, "report": str(out / "compare.json"), "wall_s": round(time.time() - started, 1)}
    write_metrics(out, metrics)
    with tracked(cfg, stage_run(cfg, "compare")) as tracker:
        record(tracker, report, 0, files=tuple(out / f"compare.{suffix}" for suffix in ("md", "png", "json")))
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = config_parser(__doc__.splitlines()[0], STAGES["compare"].reads)
    parser.add_argument("--url", help="base URL of a running `raykd serve` (default: deploy the app here)")
    args = parser.parse_args(argv)

    def compare_and_show(cfg: RaykdConfig) -> dict:
        metrics = run(cfg, args.url)
        show("\n" + Path(metrics["report"]).with_suffix(".md").read_text())  # the command's answer: the table
        return metrics

    run_stage("compare", compare_and_show, load_or_fail(args.config, args.overrides))


if __name__ == "__main__":
    main()
