"""The built-in task as conversations (``configs/chat.yaml``) from the outside: fine-tune, cache (the
teacher answers unlabeled conversations), distil, evaluate against the labels-only baseline, and the
served student answering the OpenAI SDK's chat call as evaluation's generation does."""

from __future__ import annotations

import json

import openai
import pytest
from transformers import AutoModelForCausalLM

from raykd.builtin.data import generate_split
from raykd.config import load_config
from raykd.data.examples import generation_case
from raykd.data.tokens import load_tokenizer
from raykd.evaluation.scoring import generate_completions
from tests.conftest import REPO, raykd
from tests.serving.servers import start_serve, stop_serve

pytestmark = pytest.mark.slow

CHAT = REPO / "configs" / "chat.yaml"


def test_the_builtin_task_as_conversations_distils_beats_the_baseline_and_serves_chat(tmp_path, head_env):
    unlabeled = tmp_path / "unlabeled.jsonl"  # a user's own chat data: conversations ending in a user turn
    unlabeled.write_text("".join(json.dumps(r) + "\n" for r in generate_split("chat_unlabeled", 800)))
    run = tmp_path / "run"
    overrides = [f"run_dir={run}", f"data.unlabeled={unlabeled}", "finetune.steps=80", "distill.steps=80"]
    for stage in ("finetune", "cache", "distill", "evaluate"):
        raykd(stage, "--config", str(CHAT), *overrides, env=head_env)
    report = json.loads((run / "report" / "report.json").read_text())
    low, _ = report["gain_over_baseline_ci"]
    assert low > 0, report  # the teacher's answers taught the student what the labels alone do not

    cfg = load_config(CHAT, overrides)
    held_out = generate_split("chat_test", 1)[0]
    asked, reference = generation_case(held_out, cfg.data, "messages")
    student = str(run / "student")
    expected = generate_completions(AutoModelForCausalLM.from_pretrained(student), load_tokenizer(student), [asked],
                                    cfg.data.max_new_tokens, cfg.data.max_seq_len)[0]
    proc, url = start_serve(run, [], config=CHAT)
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
        reply = client.chat.completions.create(model="student", messages=asked, max_tokens=cfg.data.max_new_tokens,
                                               temperature=0)
    finally:
        assert stop_serve(proc) == 0
    choice = reply.choices[0]
    assert choice.message.content == expected and choice.finish_reason == "stop", (choice, expected, reference)
