"""Next-token choice: greedy, temperature, top-p."""

import torch

from serving.sampling import next_tokens


def test_zero_temperature_is_argmax_per_row():
    logits = torch.randn(5, 50)
    tokens = next_tokens(logits, torch.zeros(5), torch.ones(5))
    assert torch.equal(tokens, logits.argmax(-1))


def test_tiny_top_p_keeps_only_the_most_likely_token():
    logits = torch.randn(4, 50)
    tokens = next_tokens(logits, torch.ones(4), torch.full((4,), 1e-6), torch.Generator().manual_seed(0))
    assert torch.equal(tokens, logits.argmax(-1))


def test_sampling_at_temperature_one_follows_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    tokens = next_tokens(logits, torch.ones(20000), torch.ones(20000), torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=4).float() / 20000
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.015)


def test_top_p_cuts_the_tail():
    logits = torch.tensor([[3.0, 2.9, -5.0, -5.0]]).repeat(5000, 1)  # first two hold ~99.9% of the mass
    tokens = next_tokens(logits, torch.ones(5000), torch.full((5000,), 0.9), torch.Generator().manual_seed(0))
    assert set(tokens.tolist()) <= {0, 1}


def test_rows_mix_greedy_and_sampled():
    logits = torch.tensor([[0.0, 5.0], [0.0, 0.0]])
    tokens = next_tokens(logits, torch.tensor([0.0, 1.0]), torch.ones(2), torch.Generator().manual_seed(0))
    assert tokens[0] == 1 and tokens.shape == (2,)


def test_visible_text_cuts_at_a_stop_string_and_holds_back_what_may_become_one():
    from serving.sampling import visible_text

    assert visible_text("red fox.\nnext", ["\n"], final=False) == ("red fox.", True)
    assert visible_text("a b END c", ["END", "b"], final=False) == ("a ", True)  # the first one found
    assert visible_text("red fo", ["fox"], final=False) == ("red ", False)  # "fo" may become "fox"
    assert visible_text("red fo", ["fox"], final=True) == ("red fo", False)
    assert visible_text("caf\ufffd", [], final=False) == ("caf", False)  # an incomplete UTF-8 character
    assert visible_text("plain", [], final=False) == ("plain", False)
