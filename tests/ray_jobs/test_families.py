"""Models users bring: each family (tiny random models built here) through fine-tune → cache → distil →
evaluate, the stages' own ``run`` functions on one shared Ray cluster to keep the matrix cheap."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from ray_jobs import cache_teacher_logits, distill_student, evaluate, finetune_teacher
from raykd.builtin.data import generate_split
from raykd.config import load_config
from raykd.tokens import IGNORE_INDEX, load_tokenizer
from tests import families
from tests.conftest import DEMO, REPO, raykd

QUICK = ["finetune.steps=4", "finetune.checkpoint_every=4", "finetune.log_every=2", "finetune.cpus_per_worker=0.5",
         "distill.steps=4", "distill.checkpoint_every=4", "distill.log_every=2", "distill.cpus_per_worker=0.5",
         "cache.cpus_per_actor=0.5", "cache.batch_size=32", "data.eval_examples=8", "data.max_new_tokens=4",
         "finetune.warmup_steps=1", "distill.warmup_steps=1"]


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return tmp_path_factory.mktemp("family_models")


@pytest.fixture(scope="module")
def few_unlabeled(tmp_path_factory):
    path = tmp_path_factory.mktemp("family_data") / "unlabeled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in generate_split("unlabeled", 32)))
    return path


def family_config(family: str, run, models_root, few_unlabeled):
    teacher, student = families.build(family, models_root, 2), families.build(family, models_root, 1)
    if family == "bert":
        base, data = REPO / "configs" / "classification.yaml", ["data.unlabeled=builtin:cls_eval"]
    else:
        base, data = DEMO, [f"data.unlabeled={few_unlabeled}"]
    return load_config(base, [f"run_dir={run}", f"models.teacher={teacher}", f"models.student={student}",
                              "models.tokenizer=auto", *data, *QUICK])


def assert_training_rows_are_clean(cache_dir, tokenizer) -> None:
    """No row holds two BOS tokens, and no padded position carries a target."""
    table = pq.read_table(cache_dir / "shards", columns=["input_ids", "attention_mask", "labels"]).to_pandas()
    for ids, mask, labels in zip(table["input_ids"], table["attention_mask"], table["labels"]):
        ids, mask, labels = np.asarray(ids), np.asarray(mask), np.asarray(labels)
        if tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.eos_token_id:
            assert (ids[mask == 1] == tokenizer.bos_token_id).sum() <= 1
        if len(labels) == len(mask):  # causal LM: one label per position
            assert (labels[mask == 0] == IGNORE_INDEX).all()


@pytest.mark.parametrize("family", [*families.CAUSAL, "bert"])
def test_each_family_runs_the_whole_chain(family, tmp_path, local_ray, models_root, few_unlabeled):
    cfg = family_config(family, tmp_path / "run", models_root, few_unlabeled)
    finetune_teacher.run(cfg)
    cache_teacher_logits.run(cfg)
    distilled = distill_student.run(cfg)
    report = evaluate.run(cfg)
    assert distilled["teacher_forward_passes"] == 0 and distilled["steps"] == 4
    assert set(report["arms"]) == {"teacher", "student", "baseline"}
    auto = AutoModelForSequenceClassification if family == "bert" else AutoModelForCausalLM
    for arm in ("teacher", "student"):
        auto.from_pretrained(cfg.stage_dir(arm))
        AutoTokenizer.from_pretrained(cfg.stage_dir(arm))
    assert_training_rows_are_clean(cfg.stage_dir("teacher_cache"), load_tokenizer(str(cfg.stage_dir("teacher"))))


def test_a_student_with_another_tokenizer_exits_2_naming_both(tmp_path, models_root):
    llama, gpt2 = families.build("llama", models_root, 2), families.build("gpt2", models_root, 1)
    proc = raykd("distill", "--config", str(DEMO), f"run_dir={tmp_path}", f"cache.teacher={llama}",
                 f"models.student={gpt2}", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert str(llama) in line and str(gpt2) in line and "tokenizer" in line
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr  # refused before any Ray work


def test_lora_targets_that_match_nothing_exit_2(tmp_path, models_root):
    gpt2 = families.build("gpt2", models_root, 2)
    proc = raykd("finetune", "--config", str(DEMO), f"run_dir={tmp_path}", f"models.teacher={gpt2}",
                 "finetune.lora_target_modules=[q_proj,v_proj]", check=False)
    assert proc.returncode == 2 and "match no module" in proc.stderr and "c_attn" in proc.stderr
