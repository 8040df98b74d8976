"""The student's final hidden states and its LM head, taken apart for the fused loss
(``raykd.losses.fused_distillation_loss``).

The whole model still runs its own ``forward`` (so DDP's and FSDP2's hooks do their work); only the LM
head is made to see zero positions, and its output is replaced by its input, the final hidden states.
Whether that equals the model's logits (no soft-capping, scaling or other post-processing after the
head) is checked once on a real batch before the fused loss is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def output_head(model: nn.Module) -> nn.Linear | None:
    """The LM head of a (possibly DDP-wrapped) causal LM when it is a plain linear layer, else None."""
    base = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    return head if isinstance(head, nn.Linear) else None


def head_inputs(model: nn.Module, head: nn.Linear, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> torch.Tensor:
    """``(B, S, H)``: what ``head`` would be applied to in ``model``'s forward, without applying it."""
    seen: list[torch.Tensor] = []

    def keep_input(_, args):
        seen.append(args[0])
        return (args[0][..., :0, :],)  # the head computes logits of no position

    handles = [head.register_forward_pre_hook(keep_input),
               head.register_forward_hook(lambda *_: seen[-1])]
    try:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def fuses_exactly(model: nn.Module, head: nn.Linear, batch: dict, vocab: int) -> bool:
    """Whether ``head`` applied to ``head_inputs`` gives the model's own logits on ``batch`` (compared
    in eval mode: dropout would make two forwards differ)."""
    ids, mask = batch["input_ids"][:2], batch["attention_mask"][:2]
    training = model.training
    model.eval()
    try:
        logits = model(input_ids=ids, attention_mask=mask).logits[..., :vocab].float()
        hidden = head_inputs(model, head, ids, mask)
    finally:
        model.train(training)
    rebuilt = F.linear(hidden, head.weight[:vocab], None if head.bias is None else head.bias[:vocab]).float()
    return rebuilt.shape == logits.shape and torch.allclose(rebuilt, logits, atol=1e-4, rtol=1e-4)
