"""raykd/evaluation/draft.py: speculative-sampling acceptance, accepted length and speedup."""

import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from raykd.data.tokens import IGNORE_INDEX
from raykd.evaluation import draft


def test_acceptance_is_one_minus_total_variation():
    torch.manual_seed(0)
    p, q = torch.log_softmax(torch.randn(5, 7, 11), -1), torch.log_softmax(3 * torch.randn(5, 7, 11), -1)
    total_variation = 0.5 * (p.exp() - q.exp()).abs().sum(-1)
    assert torch.allclose(draft.acceptance(p, q), 1 - total_variation, atol=1e-6)
    assert torch.allclose(draft.acceptance(p, p), torch.ones(5, 7), atol=1e-6)
    disjoint = torch.log(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert draft.acceptance(disjoint[0], disjoint[1]).item() == 0


@pytest.mark.parametrize(("alpha", "gamma"), [(0.3, 1), (0.6, 4), (0.9, 8)])
def test_accepted_length_matches_a_simulation_of_independent_acceptances(alpha, gamma):
    rng = random.Random(0)

    def one_pass() -> int:  # accepted drafted tokens until the first rejection, plus the target's own token
        accepted = 0
        while accepted < gamma and rng.random() < alpha:
            accepted += 1
        return accepted + 1

    simulated = sum(one_pass() for _ in range(100_000)) / 100_000
    assert draft.accepted_length(alpha, gamma) == pytest.approx(simulated, rel=0.01)


def test_accepted_length_and_speedup_at_the_edges():
    assert draft.accepted_length(0.0, 5) == 1 and draft.accepted_length(1.0, 5) == 6
    assert draft.accepted_length(0.5, 2) == pytest.approx(1.75)
    assert draft.predicted_speedup(0.5, 2, 0.0) == pytest.approx(1.75)  # a free draft: every token made counts
    assert draft.predicted_speedup(0.5, 2, 0.25) == pytest.approx(1.75 / 1.5)
    assert draft.predicted_speedup(0.0, 3, 0.1) < 1  # a draft never accepted only costs


def tiny_lm(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def test_row_acceptance_averages_the_label_tokens_of_each_row_and_leaves_out_rows_without_any():
    target, other = tiny_lm(0), tiny_lm(1)
    ids = torch.randint(0, 32, (3, 6), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[0, :3] = IGNORE_INDEX  # row 0: tokens 3..5 are labels
    labels[1] = IGNORE_INDEX  # row 1: no label at all
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    p, q = draft.label_log_probs(target, batch, 32), draft.label_log_probs(other, batch, 32)
    assert p.shape == (3 + 5, 32)
    same, agree, tokens = draft.row_acceptance(p, p, labels)
    assert same == pytest.approx([1.0, 1.0]) and agree == [1.0, 1.0] and tokens == [3, 5]
    alphas, agreements, _ = draft.row_acceptance(p, q, labels)
    with torch.no_grad():  # row 0's positions 2..4 predict its label tokens 3..5
        p0 = torch.log_softmax(target(input_ids=ids).logits[0, 2:5], -1)
        q0 = torch.log_softmax(other(input_ids=ids).logits[0, 2:5], -1)
    assert alphas[0] == pytest.approx(draft.acceptance(p0, q0).mean().item(), abs=1e-6)
    assert agreements[0] == pytest.approx((p0.argmax(-1) == q0.argmax(-1)).float().mean().item())
    assert all(0 < a < 1 for a in alphas)
    assert draft.label_log_probs(target, batch, 20).shape == (8, 20)  # columns past the tokenizer's are cut


def test_a_summary_weighs_tokens_predicts_every_gamma_and_a_gain_is_paired_over_rows():
    summary = draft.draft_summary([0.5, 0.9], [0.0, 1.0], tokens=[1, 3], cost_ratio=0.2)
    assert summary["acceptance"] == pytest.approx(0.8) and summary["greedy_agreement"] == pytest.approx(0.75)
    low, high = summary["acceptance_ci"]
    assert 0.5 <= low <= 0.8 <= high <= 0.9
    assert list(summary["accepted_length"]) == [str(g) for g in draft.GAMMAS]
    assert summary["predicted_speedup"]["4"] == pytest.approx(draft.accepted_length(0.8, 4) / 1.8)
    gain = draft.acceptance_gain([0.5, 0.7, 0.9], [0.3, 0.5, 0.7], tokens=[2, 2, 2])
    assert gain["difference"] == pytest.approx(0.2) and gain["difference_ci"] == pytest.approx([0.2, 0.2])
