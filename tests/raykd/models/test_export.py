"""Streamed export: the merged model written weight by weight from a DCP checkpoint and the base files
computes what transformers' whole-model merge (``merge_and_unload`` + ``save_pretrained``) computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from raykd.config import FinetuneConfig, ModelsConfig
from raykd.models.export import INDEX_FILE, export_model, plan_shards
from raykd.models.load import add_lora, load_model, save_model
from raykd.training.checkpoints import MODEL_KEY
from tests import families

MODELS = ModelsConfig(save_dtype="float32")


def test_plan_shards_keeps_order_and_size():
    assert plan_shards({"a": 4, "b": 4, "c": 9, "d": 1}, 8) == [["a", "b"], ["c"], ["d"]]
    assert plan_shards({"a": 4}, 100) == [["a"]]


def builder(directory: Path, task: str, lora: bool):
    def build(weights: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        model = load_model(str(directory), task, 3, weights=weights, pad_token_id=0)
        if lora:
            model = add_lora(model, FinetuneConfig(lora_target_modules=["all-linear"]), task)
        return model
    return build


def trained_checkpoint(model: torch.nn.Module, directory: Path) -> None:
    """Move every trainable weight (LoRA B included, so the merge matters) and checkpoint them."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    dcp.save({MODEL_KEY: trainable}, checkpoint_id=str(directory), no_dist=True)


def logits(directory: Path, task: str) -> torch.Tensor:
    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    model = auto.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(input_ids=torch.arange(3, 27).reshape(2, 12) % 300).logits


@pytest.mark.parametrize("family,task,lora", [("llama", "causal_lm", True), ("gpt2", "causal_lm", True),
                                              ("qwen2", "causal_lm", False),
                                              ("llama", "sequence_classification", True)])
def test_the_streamed_export_equals_the_whole_model_merge(tmp_path, family, task, lora):
    base = families.build(family, tmp_path)
    build = builder(base, task, lora)
    model = build(True)
    trained_checkpoint(model, tmp_path / "checkpoint")
    save_model(model, str(base), str(tmp_path / "whole"), "float32")  # the reference: merged in memory
    export_model(build, str(base), str(tmp_path / "checkpoint"), str(base), str(tmp_path / "streamed"), MODELS)
    expected = logits(tmp_path / "whole", task)
    assert torch.allclose(logits(tmp_path / "streamed", task), expected, atol=1e-5)
    if lora:  # the adapter alone, on the base, computes the same
        auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
        adapted = PeftModel.from_pretrained(auto.from_pretrained(base, num_labels=3, pad_token_id=0)
                                            if task != "causal_lm" else auto.from_pretrained(base),
                                            tmp_path / "streamed" / "adapter").eval()
        with torch.no_grad():
            got = adapted(input_ids=torch.arange(3, 27).reshape(2, 12) % 300).logits
        assert torch.allclose(got, expected, atol=1e-5)


def test_small_shards_are_indexed_and_load(tmp_path):
    base = families.build("llama", tmp_path)
    build = builder(base, "causal_lm", True)
    trained_checkpoint(build(True), tmp_path / "checkpoint")
    out = tmp_path / "streamed"
    export_model(build, str(base), str(tmp_path / "checkpoint"), str(base), str(out), MODELS, max_shard_bytes=100_000)
    assert (out / INDEX_FILE).exists() and len(list(out.glob("model-*-of-*.safetensors"))) > 2
    assert logits(out, "causal_lm").shape == (2, 12, len(families.tokenizer("llama")))


@pytest.mark.parametrize("lora", [False, True])
def test_a_random_init_preset_streams_only_when_every_weight_is_trained(tmp_path, lora):
    """A full fine-tune of a ``tiny:`` preset streams from the checkpoint alone; with LoRA its frozen
    base exists only once built (seeded), so it is rebuilt whole. Both equal the model as trained."""
    from raykd.builtin.presets import TOKENIZER_DIR

    def build(weights: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        model = load_model("tiny:student", "causal_lm", 2, weights=weights)
        return add_lora(model, FinetuneConfig(), "causal_lm") if lora else model

    model = build(True)
    trained_checkpoint(model, tmp_path / "checkpoint")
    out = tmp_path / "out"
    export_model(build, "tiny:student", str(tmp_path / "checkpoint"), str(TOKENIZER_DIR), str(out), MODELS)
    save_model(model, str(TOKENIZER_DIR), str(tmp_path / "whole"), "float32")
    assert torch.allclose(logits(out, "causal_lm"), logits(tmp_path / "whole", "causal_lm"), atol=1e-5)
