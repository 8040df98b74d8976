"""The distillation loss function's parts: each over the targets it was taken on, none where its weight is 0."""

import pytest

from raykd.config import load_config
from raykd.training.distill import make_loss_fn
from tests.conftest import DEMO
from tests.raykd.models.test_student_head import VOCAB, batch, llama


@pytest.mark.parametrize("alpha, soft_on, hard_on", [(0.0, False, True), (0.5, True, True), (1.0, True, False)])
def test_the_loss_reports_soft_and_hard_parts_only_where_they_weigh(alpha, soft_on, hard_on):
    cfg = load_config(DEMO, [f"distill.alpha={alpha}"])
    summed, count, parts = make_loss_fn(cfg.distill, cfg.task, VOCAB, None)(llama(), batch())
    (soft, soft_n), (hard, hard_n) = parts["soft_loss"], parts["hard_loss"]
    assert set(parts) == {"soft_loss", "hard_loss"}  # the same names whatever the weights: ranks all-reduce them
    assert (int(soft_n) == int(count)) is soft_on and (int(hard_n) == int(count)) is hard_on
    mixed = alpha * soft / count + (1 - alpha) * hard / count
    assert float(summed / count) == pytest.approx(float(mixed), rel=1e-5)
