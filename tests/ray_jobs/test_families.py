"""Models users bring: each family (tiny random models built here) through fine-tune → cache → distil →
evaluate → serve over HTTP, the stages' own ``run`` functions on one shared Ray cluster to keep the
matrix cheap. Each family also trains one stage another way (FSDP2 or DDP over 2 workers, full or LoRA)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from ray import serve
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from ray_jobs import cache_teacher_logits, distill_student, evaluate, finetune_teacher
from raykd.builtin.data import generate_split
from raykd.config import load_config
from raykd.data.tokens import IGNORE_INDEX, load_tokenizer
from serving import app
from tests import families
from tests.conftest import DEMO, REPO, free_port, raykd

pytestmark = pytest.mark.slow

QUICK = ["finetune.steps=4", "finetune.checkpoint_every=4", "finetune.log_every=2", "finetune.cpus_per_worker=0.5",
         "distill.steps=4", "distill.checkpoint_every=4", "distill.log_every=2", "distill.cpus_per_worker=0.5",
         "cache.cpus_per_actor=0.5", "cache.batch_size=32", "data.eval_examples=8", "data.max_new_tokens=4",
         "finetune.warmup_steps=1", "distill.warmup_steps=1"]
REPORTED = ("llama", "bert")  # the report's causal and classifier paths; it trains a third model per family
TWO_WORKERS = {  # family → how one of its stages trains instead of 1 worker, LoRA
    "llama": ["finetune.workers=2", "finetune.sharding=fsdp", "finetune.method=full", "finetune.grad_accum=2"],
    "qwen2": ["distill.workers=2", "distill.sharding=fsdp", "distill.grad_accum=2"],
    "bert": ["distill.workers=2", "distill.sharding=ddp", "distill.grad_accum=2"],
}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return tmp_path_factory.mktemp("family_models")


@pytest.fixture(scope="module")
def serve_port(local_ray):
    """One Serve instance for the module (each family's app replaces the last), shut down at its end."""
    yield free_port()
    serve.shutdown()


@pytest.fixture(scope="module")
def few_rows(tmp_path_factory) -> dict[str, str]:
    """A few rows of each split the matrix trains on: it tests the families, not the data."""
    root = tmp_path_factory.mktemp("family_data")
    sizes = {"unlabeled": 32, "cls_train": 96, "cls_eval": 32}
    for split, n in sizes.items():
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in generate_split(split)[:n]))
    return {split: str(root / f"{split}.jsonl") for split in sizes}


def family_config(family: str, run, models_root, few_rows):
    teacher, student = families.build(family, models_root, 2), families.build(family, models_root, 1)
    if family == "bert":
        base = REPO / "configs" / "classification.yaml"
        data = [f"data.train={few_rows['cls_train']}", f"data.unlabeled={few_rows['cls_eval']}"]
    else:
        base, data = DEMO, [f"data.unlabeled={few_rows['unlabeled']}"]
    return load_config(base, [f"run_dir={run}", f"models.teacher={teacher}", f"models.student={student}",
                              "models.tokenizer=auto", *data, *QUICK, *TWO_WORKERS[family]])


def assert_training_rows_are_clean(cache_dir, tokenizer) -> None:
    """No row holds two BOS tokens, and no padded position carries a target."""
    table = pq.read_table(cache_dir / "shards", columns=["input_ids", "attention_mask", "labels"]).to_pandas()
    for ids, mask, labels in zip(table["input_ids"], table["attention_mask"], table["labels"]):
        ids, mask, labels = np.asarray(ids), np.asarray(mask), np.asarray(labels)
        if tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.eos_token_id:
            assert (ids[mask == 1] == tokenizer.bos_token_id).sum() <= 1
        if len(labels) == len(mask):  # causal LM: one label per position
            assert (labels[mask == 0] == IGNORE_INDEX).all()


def assert_both_arms_answer_over_http(cfg, port: int) -> None:
    """RUN/teacher and RUN/student served; a completion from each over real HTTP, and a chat answer
    where the tokenizer has a chat template (a clear 400 where it has none)."""
    cfg.serve.port = port
    url = app.start(cfg)
    try:
        for arm in ("teacher", "student"):
            assert_arm_answers(cfg, url, arm)
    finally:
        serve.delete(app.APP_NAME)  # frees the replicas' CPUs for the next family's training


def assert_arm_answers(cfg, url: str, arm: str) -> None:
    """A completion, and a chat answer (or the 400 for a tokenizer without a chat template)."""
    done = httpx.post(f"{url}/v1/completions", timeout=120, json={
        "model": arm, "prompt": "question: what are fox and red?\nanswer:", "max_tokens": 4, "temperature": 0})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["choices"][0]["finish_reason"] in ("stop", "length") and body["usage"]["completion_tokens"] >= 1
    chat = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": arm, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    if load_tokenizer(str(cfg.stage_dir(arm))).chat_template:
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"] == "assistant", chat.text
    else:
        assert chat.status_code == 400 and "no chat template" in chat.json()["error"]["message"]



# Mistral (Llama's blocks and tokenizer behaviour) and GPT-2 (one token for BOS and EOS, c_attn) are
# built, tokenised (tests/raykd/data/test_tokens.py), LoRA-targeted and refused below; their full chains
# repeated Llama's stages and would push the suite past CI's limit.
@pytest.mark.parametrize("family", ["llama", "qwen2", "bert"])
def test_each_family_runs_the_whole_chain(family, tmp_path, local_ray, models_root, few_rows, serve_port):
    cfg = family_config(family, tmp_path / "run", models_root, few_rows)
    finetune_teacher.run(cfg)
    cache_teacher_logits.run(cfg)
    distilled = distill_student.run(cfg)
    assert distilled["teacher_forward_passes"] == 0 and distilled["steps"] == 4
    if family in REPORTED:
        assert set(evaluate.run(cfg)["arms"]) == {"teacher", "student", "baseline"}
    auto = AutoModelForSequenceClassification if family == "bert" else AutoModelForCausalLM
    for arm in ("teacher", "student"):
        auto.from_pretrained(cfg.stage_dir(arm))
        AutoTokenizer.from_pretrained(cfg.stage_dir(arm))
    assert_training_rows_are_clean(cfg.stage_dir("teacher_cache"), load_tokenizer(str(cfg.stage_dir("teacher"))))
    if family != "bert":  # serving is for generative models
        assert_both_arms_answer_over_http(cfg, serve_port)


def test_a_student_with_another_tokenizer_exits_2_naming_both(tmp_path, models_root):
    mistral, gpt2 = families.build("mistral", models_root, 2), families.build("gpt2", models_root, 1)
    proc = raykd("distill", "--config", str(DEMO), f"run_dir={tmp_path}", f"cache.teacher={mistral}",
                 f"models.student={gpt2}", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert str(mistral) in line and str(gpt2) in line and "tokenizer" in line
    assert "Started a local Ray instance" not in (tmp_path / "logs" / "distill.log").read_text()  # before any Ray


def test_lora_targets_that_match_nothing_exit_2(tmp_path, models_root):
    gpt2 = families.build("gpt2", models_root, 2)
    proc = raykd("finetune", "--config", str(DEMO), f"run_dir={tmp_path}", f"models.teacher={gpt2}",
                 "finetune.lora_target_modules=[q_proj,v_proj]", check=False)
    assert proc.returncode == 2 and "match no module" in proc.stderr and "c_attn" in proc.stderr
