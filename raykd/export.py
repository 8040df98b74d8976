"""Export a trained model from its checkpoint as a standard Hugging Face directory, in a Ray task."""

from __future__ import annotations

from collections.abc import Callable

import ray
import ray.train
from torch import nn

from raykd.config import ModelsConfig
from raykd.model_hash import record_model_hash
from raykd.models import save_model


@ray.remote
def export_checkpoint(build: Callable[[str], nn.Module], checkpoint: ray.train.Checkpoint, tokenizer_dir: str,
                      out_dir: str, models: ModelsConfig) -> int:
    """``build(checkpoint_dir)`` rebuilds the trained model; it is saved to ``out_dir`` with the tokenizer
    of ``tokenizer_dir`` in ``models.save_dtype``, with the content hash of what was written (later
    stages tell this model from any other by it). Returns its parameter count."""
    with checkpoint.as_directory() as d:
        model = build(d)
    params = save_model(model, tokenizer_dir, out_dir, models.save_dtype, models.trust_remote_code)
    record_model_hash(out_dir)
    return params
