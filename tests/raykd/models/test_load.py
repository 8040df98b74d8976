import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from raykd.builtin.presets import PRESETS, TOKENIZER_DIR
from raykd.config import ConfigError, FinetuneConfig
from raykd.models.load import (
    add_lora,
    checkpoint_blocks,
    count_params,
    keep_layers,
    load_model,
    lora_target_modules,
    save_model,
    transformer_blocks,
)
from tests import families


def test_presets_are_teacher_and_tenfold_smaller_student():
    teacher = count_params(load_model("tiny:teacher", "causal_lm", 2))
    student = count_params(load_model("tiny:student", "causal_lm", 2))
    assert 15e6 < teacher < 30e6 and student / teacher < 0.15
    assert set(PRESETS) == {"teacher", "student"}


def test_builtin_base_loads_as_classifier_with_fresh_head():
    model = load_model("builtin:student", "sequence_classification", 3)
    logits = model(input_ids=torch.tensor([[1, 5, 6]])).logits
    assert logits.shape == (1, 3)


def test_lora_trains_only_adapters_and_saves_merged(tmp_path):
    model = add_lora(load_model("builtin:student", "causal_lm", 2), FinetuneConfig(), "causal_lm")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(transformer_blocks(model)) == PRESETS["student"]["num_hidden_layers"]
    with torch.no_grad():  # make the adapter non-zero so merging changes the weights
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.01)
    ids = torch.tensor([[1, 5, 6, 7]])
    expected = model.eval()(input_ids=ids).logits
    params = save_model(model, str(TOKENIZER_DIR), str(tmp_path), "float32")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert params == count_params(loaded)
    assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-4)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token == "<pad>"


def test_student_from_teacher_layers_keeps_the_chosen_blocks_and_generates():
    teacher = load_model("builtin:teacher", "causal_lm", 2)
    blocks = transformer_blocks(teacher)
    chosen = [blocks[0], blocks[5]]
    student = keep_layers(teacher, [0, 5])
    assert list(transformer_blocks(student)) == chosen and student.config.num_hidden_layers == 2
    out = student.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=3, min_new_tokens=3, do_sample=False,
                           pad_token_id=0)
    assert out.shape == (1, 6)


# -- architectures users bring (tiny random models of each family, built here) -------------------------
AUTO_TARGETS = {"llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"],
                "gpt2": ["c_attn"], "bert": ["query", "value"]}

# all-linear: each block's linear leaves (a name may occur twice in a block: GPT-2's c_proj, BERT's dense).
_LLAMA_LINEAR = ({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, 7)
ALL_LINEAR = {"llama": _LLAMA_LINEAR, "qwen2": _LLAMA_LINEAR, "mistral": _LLAMA_LINEAR,
              "gpt2": ({"c_attn", "c_proj", "c_fc"}, 4), "bert": ({"query", "key", "value", "dense"}, 6)}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: families.build(family, root) for family in AUTO_TARGETS}


@pytest.mark.parametrize("family", list(AUTO_TARGETS))
def test_blocks_and_lora_targets_are_found_for_each_family(family_dirs, family):
    task = "sequence_classification" if family == "bert" else "causal_lm"
    model = load_model(str(family_dirs[family]), task, 3)
    assert len(transformer_blocks(model)) == 2
    assert lora_target_modules(model, ["auto"]) == AUTO_TARGETS[family]
    with pytest.raises(ConfigError, match="no_such_proj match no module"):
        lora_target_modules(model, ["no_such_proj"])
    every = lora_target_modules(model, ["all-linear"])
    leaves, per_block = ALL_LINEAR[family]
    assert {name.rsplit(".", 1)[1] for name in every} == leaves and len(every) == 2 * per_block
    assert not [n for n in every if any(head in n for head in ("lm_head", "pooler", "classifier", "score"))]
    wrapped = add_lora(model, FinetuneConfig(), task)
    assert len(transformer_blocks(wrapped)) == 2 and any("lora_" in n for n, _ in wrapped.named_parameters())
    fresh = load_model(str(family_dirs[family]), task, 3)
    adapted = add_lora(fresh, FinetuneConfig(lora_target_modules=["all-linear"]), task)
    assert sum(n.endswith("lora_A.default.weight") for n, _ in adapted.named_parameters()) == len(every)


def test_builtin_auto_targets_are_the_seed_default():
    assert lora_target_modules(load_model("builtin:student", "causal_lm", 2), ["auto"]) == ["q_proj", "v_proj"]


def test_gpt2_student_from_teacher_layers_renumbers_its_kv_cache(family_dirs):
    model = keep_layers(load_model(str(family_dirs["gpt2"]), "causal_lm", 2), [1])
    assert transformer_blocks(model)[0].attn.layer_idx == 0
    out = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, min_new_tokens=3, do_sample=False,
                         pad_token_id=0)
    assert out.shape == (1, 6)


def test_a_decoder_classifier_without_a_pad_id_gets_the_tokenizers(family_dirs):
    model = load_model(str(family_dirs["gpt2"]), "sequence_classification", 3, pad_token_id=7)
    assert model.config.pad_token_id == 7
    logits = model(input_ids=torch.tensor([[5, 6, 7, 7], [5, 6, 8, 9]])).logits  # batch > 1 needs the pad id
    assert logits.shape == (2, 3)


def lora_step(model_dir, task: str, checkpointed: bool) -> tuple[dict[str, torch.Tensor], list[str], int]:
    """One LoRA training step (dropout on) of a family's model: its gradients, its parameter names and the
    bytes autograd saved for backward."""
    torch.manual_seed(0)
    model = add_lora(load_model(str(model_dir), task, 3), FinetuneConfig(lora_target_modules=["all-linear"]), task)
    if checkpointed:
        checkpoint_blocks(model)
    model.train()
    ids = torch.randint(5, 300, (4, 24))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # a left-padded row: an explicit attention mask, as training batches have
    labels = torch.tensor([0, 1, 2, 1]) if task == "sequence_classification" else ids
    saved = []

    def keep(t):
        saved.append(t.numel() * t.element_size())
        return t

    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return grads, [n for n, _ in model.named_parameters()], sum(saved)


@pytest.mark.parametrize("family", list(AUTO_TARGETS))
def test_activation_checkpointing_keeps_gradients_and_names_and_saves_less(family_dirs, family):
    task = "sequence_classification" if family == "bert" else "causal_lm"
    plain, names, plain_bytes = lora_step(family_dirs[family], task, checkpointed=False)
    recomputed, checkpointed_names, saved_bytes = lora_step(family_dirs[family], task, checkpointed=True)
    assert checkpointed_names == names  # checkpoints, LoRA merging and export key on these
    assert plain.keys() == recomputed.keys() and any(g.abs().sum() > 0 for g in plain.values())
    for name, grad in plain.items():  # the same dropout masks in the recomputation
        torch.testing.assert_close(recomputed[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert saved_bytes < 0.6 * plain_bytes


def test_a_checkpointed_model_still_generates_with_its_kv_cache(family_dirs):
    model = load_model(str(family_dirs["llama"]), "causal_lm", 3).eval()
    ids = torch.randint(5, 300, (2, 8))
    before = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
    checkpoint_blocks(model)
    after = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                           return_dict_in_generate=True)
    assert torch.equal(after.sequences, before) and after.past_key_values is not None
