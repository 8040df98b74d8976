"""The report's vLLM scoring means what the transformers scoring means: the same loss and exact match
on the same held-out rows, and the same parameter count (read from safetensors headers)."""


import pytest
from transformers import AutoModelForCausalLM

from raykd.builtin.data import generate_split
from raykd.config import load_config
from raykd.data.tokens import load_tokenizer
from raykd.evaluation.scoring import score_model
from raykd.models.load import count_params, resolve_model
from tests.conftest import DEMO, needs_vllm
from tests.near_ties import decisive, has_near_tie

pytestmark = [pytest.mark.slow, needs_vllm]


def test_vllm_scores_the_teacher_as_transformers_does():
    from vllm import LLM

    from raykd.evaluation.vllm_scoring import params_on_disk, vllm_quality, vllm_speed
    from raykd.vllm_support import close_llm, engine_args

    cfg = load_config(DEMO, ["evaluate.vllm.max_model_len=64", "evaluate.vllm.kv_cache_gib=0.25",
                             "evaluate.vllm.enforce_eager=true", "evaluate.vllm.dtype=float32"])
    teacher = resolve_model("builtin:teacher")
    rows = generate_split("eval")[:24]
    tokenizer = load_tokenizer(teacher)
    model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    expected = score_model(model, tokenizer, rows, cfg.data, cfg.task, "prompt")
    llm = LLM(**engine_args(teacher, teacher, cfg.evaluate.vllm, False))
    try:
        got = vllm_quality(llm, tokenizer, rows, cfg, "prompt")
        speed = vllm_speed({"teacher": llm}, tokenizer("the fox").input_ids, 4, repeats=3, batch=4)["teacher"]
    finally:
        close_llm(llm)
    ties = [has_near_tie(model, tokenizer, r["prompt"], cfg.data.max_new_tokens, cfg.data.max_seq_len) for r in rows]
    assert decisive(got["hits"], ties) == decisive(expected["hits"], ties) and sum(ties) < len(rows) / 2, ties
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-3)
    assert params_on_disk(teacher) == count_params(model)
    assert speed["latency_p50_s"] > 0 and speed["throughput_per_s"] > 0
