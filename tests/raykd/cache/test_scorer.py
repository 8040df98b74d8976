"""The cache's teacher pass on conversations: rows normalised with their conversation, and the teacher
answering one that ends before its reply."""

import json

import numpy as np
import torch

from raykd.cache.scorer import TeacherScorer, normalize
from raykd.config import DataConfig, load_config
from raykd.data.examples import prompt_ids
from raykd.data.tokens import IGNORE_INDEX, stop_token_ids
from raykd.models.load import resolve_model
from tests.conftest import DEMO
from tests.raykd.data.test_chat import TALK


def test_conversations_are_normalised_and_an_unlabeled_reply_is_left_to_the_teacher():
    batch = {"messages": np.array([json.dumps(TALK)])}
    data = DataConfig().__dict__
    labeled = normalize(batch, "messages", True, data, "chat.jsonl")
    unlabeled = normalize(batch, "messages", False, data, "chat.jsonl", held_out=False)
    assert json.loads(labeled["messages"][0]) == TALK and json.loads(unlabeled["messages"][0]) == TALK[:-1]
    assert labeled["prompt"][0] == labeled["target"][0] == "" and not unlabeled["held_out"][0]


def test_the_teacher_answers_a_conversation_and_its_reply_is_the_target():
    cfg = load_config(DEMO, ["data.max_seq_len=64"])
    scorer = TeacherScorer(cfg.to_dict(), resolve_model(cfg.models.teacher))
    asked = TALK[:-1]
    out = scorer({"prompt": np.array(["", ""]), "target": np.array(["", ""]),
                  "messages": np.array([json.dumps(asked), json.dumps(TALK)]), "held_out": np.array([False, False])})
    prompt = prompt_ids(scorer.tokenizer, asked, 64)
    answered, labels = out["input_ids"][0].tolist(), out["labels"][0]
    assert answered[: len(prompt)] == prompt
    reply = [j for j, label in enumerate(labels) if label != IGNORE_INDEX and j >= len(prompt)]
    assert reply and reply[0] == len(prompt) and reply == list(range(reply[0], reply[-1] + 1))
    assert labels[len(prompt) - 1] == IGNORE_INDEX  # the assistant's header is context, not a target
    generated = scorer.model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=int),
                                      max_new_tokens=cfg.data.max_new_tokens, do_sample=False,
                                      eos_token_id=stop_token_ids(scorer.model, scorer.tokenizer),
                                      pad_token_id=scorer.tokenizer.pad_token_id)[0, len(prompt):].tolist()
    assert answered[len(prompt) : len(prompt) + len(generated)] == generated  # the reply renders back to its ids
    assert (out["labels"][1] != IGNORE_INDEX).sum() > 0  # a labeled conversation keeps its own turns as targets
