"""The step loop's order and averaging: seeded epochs, resumable positions, per-target means."""

import pytest
import ray.data
import torch
from torch import nn

from raykd.training.loop import accumulate_gradients, micro_batches


def ids(batches, n):
    return [next(batches)["id"].tolist() for _ in range(n)]


@pytest.mark.slow
def test_each_epoch_is_shuffled_by_the_seed_and_a_resume_skips_what_was_trained(local_ray):
    data = ray.data.range(64, override_num_blocks=1)
    run = ids(micro_batches(data, 8, seed=3), 16)  # two epochs of 8 micro-batches
    first, second = sum(run[:8], []), sum(run[8:], [])
    assert sorted(first) == sorted(second) == list(range(64))  # every row once per epoch
    assert first != list(range(64)) and first != second  # shuffled, and differently each epoch
    assert ids(micro_batches(data, 8, seed=3), 16) == run  # the seed fixes the order
    assert ids(micro_batches(data, 8, seed=4), 8) != run[:8]
    assert ids(micro_batches(data, 8, seed=3, skip=11), 5) == run[11:]  # a resume continues the sequence


def loss_of(model, batch):
    """Summed squared error over the rows whose ``keep`` is 1, and their count (like label tokens)."""
    errors = ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2) * batch["keep"]
    return errors.sum(), batch["keep"].sum(), {"error": (errors.sum().detach(), batch["keep"].sum()),
                                               "never": (torch.tensor(0.0), torch.tensor(0.0))}


def gradient(model, batches):
    model.zero_grad()
    mean, parts = accumulate_gradients(model, batches, loss_of, world=1, bf16=False)
    assert parts == {"error": pytest.approx(mean)}  # the whole loss; a part taken on no target is left out
    return mean, torch.cat([p.grad.flatten() for p in model.parameters()])


def test_accumulated_micro_batches_weigh_every_target_equally():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8)
    keep = torch.tensor([1, 0, 0, 0, 1, 1, 1, 1.0])  # the first micro-batch has 1 target, the second 4
    rows = {"x": x, "y": y, "keep": keep}
    whole = gradient(model, [rows])
    split = gradient(model, [{k: v[:4] for k, v in rows.items()}, {k: v[4:] for k, v in rows.items()}])
    assert split[0] == pytest.approx(whole[0]) and torch.allclose(split[1], whole[1], atol=1e-6)
    per_batch_means = (loss_of(model, {k: v[:4] for k, v in rows.items()})[0] / 1
                       + loss_of(model, {k: v[4:] for k, v in rows.items()})[0] / 4) / 2
    assert per_batch_means.item() != pytest.approx(whole[0], rel=1e-3)  # what averaging per micro-batch gave
