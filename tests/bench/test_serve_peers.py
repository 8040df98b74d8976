"""docs/serve.md's comparison with vLLM's own server and Ray Serve LLM is rendered from
bench/results/serve_peers.json; the ratios are to bare ``vllm serve`` of the same run."""

import importlib.util
import json
import sys

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("serve_peers", REPO / "bench" / "serve_peers.py")
serve_peers = importlib.util.module_from_spec(spec)
sys.modules.setdefault("serve_peers", serve_peers)
spec.loader.exec_module(serve_peers)


def test_the_serving_page_shows_the_table_the_results_render():
    results = json.loads(serve_peers.OUT.read_text())
    doc = serve_peers.DOC.read_text()
    assert serve_peers.with_table(doc, serve_peers.table(results)) == doc, \
        "stale: run `python bench/serve_peers.py --table`"


def level(tokens_per_s: float, ttft_ms: float) -> dict:
    return {"output_tokens_per_s": tokens_per_s, "ttft_p50_ms": ttft_ms}


def test_ratios_are_to_bare_vllm_serve_per_concurrency():
    servers = {"vllm_serve": {"levels": {"1": level(100, 20), "8": level(500, 100)}, "openai": {"ttft_p50_ms": 25}},
               "raykd_vllm": {"levels": {"1": level(90, 28), "8": level(450, 130)}, "openai": {"ttft_p50_ms": 31}}}
    ratios = serve_peers.ratios(servers)
    assert list(ratios) == ["raykd_vllm"]
    assert ratios["raykd_vllm"]["levels"] == {"1": {"tokens_per_s_ratio": 0.9, "ttft_p50_overhead_ms": 8.0},
                                              "8": {"tokens_per_s_ratio": 0.9, "ttft_p50_overhead_ms": 30.0}}
    assert "openai" not in str(ratios)  # the baseline's openai-client TTFT is not steady: no ratio to it


def test_medians_are_taken_field_by_field_and_a_role_missing_from_a_pass_counts_as_zero():
    passes = [{"start_s": 10, "levels": {"8": {"output_tokens_per_s": 400, "cores_by_role": {"vllm worker": 0.9}}},
               "engine": "vllm"},
              {"start_s": 30, "levels": {"8": {"output_tokens_per_s": 500, "cores_by_role": {"ray system": 0.1}}}},
              {"start_s": 20, "levels": {"8": {"output_tokens_per_s": 450, "cores_by_role": {"vllm worker": 0.7}}}}]
    assert serve_peers.median_of(passes) == {"start_s": 20, "levels": {"8": {
        "output_tokens_per_s": 450, "cores_by_role": {"vllm worker": 0.7, "ray system": 0}}}}
