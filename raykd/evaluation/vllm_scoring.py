"""The evaluation report's arms scored on vLLM: held-out loss from ``prompt_logprobs``, ``evaluate.scorer`` on
greedy completions, and speed, so a 70B teacher is never run through ``generate()`` in one process.

The figures mean what ``raykd.evaluation.scoring`` and ``raykd.evaluation.speed`` measure with transformers:
the loss is the mean negative log-likelihood of the target tokens, the score the mean of ``evaluate.scorer`` over
greedy completions against the reference, latency the p50 of batch-1 generation of ``new_tokens`` tokens and throughput
the tokens/s of a batch of ``batch`` such requests.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path

from raykd.config import RaykdConfig
from raykd.data.datasets import tokenize_batch
from raykd.data.examples import REFERENCED_KINDS, generation_case, prompt_ids, timing_prompt
from raykd.data.tokens import IGNORE_INDEX, end_of_turn_id, load_tokenizer
from raykd.evaluation.scorers import load_scorer, scores
from raykd.vllm_support import close_llm, engine_args


def params_on_disk(model_dir: str) -> int:
    """Parameters in a directory's safetensors files, read from their headers (nothing is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    return total


def vllm_quality(llm, tokenizer, rows: list[dict], cfg: RaykdConfig, kind: str) -> dict:
    """``{"loss", "score", "hits"}`` of one engine on held-out rows (score: ``evaluate.scorer``'s mean,
    ``hits`` its value per row; None for plain text),
    the rows encoded as ``raykd.evaluation.scoring.score_model`` encodes them."""
    from vllm import SamplingParams, TokensPrompt

    d = cfg.data
    columns = {k: [r.get(k) for r in rows] for k in rows[0]}
    encoded = tokenize_batch(columns, tokenizer.name_or_path, dataclasses.asdict(d), cfg.task, kind,
                             cfg.models.trust_remote_code)
    requests = [TokensPrompt(prompt_token_ids=ids[mask == 1].tolist())
                for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
    nll, count = 0.0, 0
    for out, labels in zip(llm.generate(requests, SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False),
                           encoded["labels"]):
        for j, ranked in enumerate(out.prompt_logprobs):
            if ranked and labels[j] != IGNORE_INDEX:
                nll, count = nll - ranked[int(labels[j])].logprob, count + 1
    hits = None
    if kind in REFERENCED_KINDS:
        cases = [generation_case(r, d, kind) for r in rows]
        prompts = [TokensPrompt(prompt_token_ids=prompt_ids(tokenizer, prompt, d.max_seq_len)) for prompt, _ in cases]
        params = SamplingParams(max_tokens=d.max_new_tokens, temperature=0,
                                stop_token_ids=[t for t in [end_of_turn_id(tokenizer)] if t is not None])
        outs = llm.generate(prompts, params, use_tqdm=False)
        hits = scores(load_scorer(cfg.evaluate.scorer), [o.outputs[0].text for o in outs],
                      [reference for _, reference in cases])
    return {"loss": nll / max(1, count), "score": sum(hits) / len(rows) if hits else None, "hits": hits}


def vllm_speed(llms: dict, prompt_ids: list[int], new_tokens: int, repeats: int = 15, batch: int = 32) -> dict:
    """Per engine, interleaved: ``latency_p50_s`` (batch 1) and ``throughput_per_s`` (``batch`` requests)."""
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens, temperature=0)
    one = [TokensPrompt(prompt_token_ids=prompt_ids)]

    def timed(llm, prompts) -> float:
        started = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - started

    for llm in llms.values():
        timed(llm, one)  # warm-up
    latency: dict[str, list[float]] = {name: [] for name in llms}
    for _ in range(repeats):
        for name, llm in llms.items():
            latency[name].append(timed(llm, one))
    return {name: {"latency_p50_s": statistics.median(latency[name]),
                   "throughput_per_s": batch * new_tokens / min(timed(llm, one * batch) for _ in range(2))}
            for name, llm in llms.items()}


def measure_vllm(cfg: RaykdConfig, dirs: dict[str, str], rows: list[dict], kind: str) -> dict:
    """``raykd.evaluation.report.measure``'s figures with every arm on its own vLLM engine (all alive at once, so
    the teacher and student are timed side by side)."""
    from vllm import LLM

    tokenizer = load_tokenizer(dirs["teacher"], cfg.models.trust_remote_code)
    llms = {arm: LLM(**engine_args(d, d, cfg.evaluate.vllm, cfg.models.trust_remote_code, seed=cfg.seed,
                                   own_gpus=True)) for arm, d in dirs.items()}
    try:
        out = {arm: vllm_quality(llm, tokenizer, rows, cfg, kind) | {"params": params_on_disk(dirs[arm])}
               for arm, llm in llms.items()}
        ids = prompt_ids(tokenizer, timing_prompt(rows[0], cfg.data, kind), cfg.data.max_seq_len)
        speed = vllm_speed({a: llms[a] for a in ("teacher", "student")}, ids, cfg.data.max_new_tokens)
    finally:
        for llm in llms.values():
            close_llm(llm)
    for arm, figures in speed.items():
        out[arm] |= figures | {"engine": "vllm"}
    return out
