import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from raykd.builtin.presets import PRESETS, TOKENIZER_DIR
from raykd.config import FinetuneConfig
from raykd.models import add_lora, count_params, decoder_layers, keep_layers, load_model, save_model


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
    assert len(decoder_layers(model)) == PRESETS["student"]["num_hidden_layers"]
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
    blocks = decoder_layers(teacher)
    chosen = [blocks[0], blocks[5]]
    student = keep_layers(teacher, [0, 5])
    assert list(decoder_layers(student)) == chosen and student.config.num_hidden_layers == 2
    out = student.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=3, min_new_tokens=3, do_sample=False,
                           pad_token_id=0)
    assert out.shape == (1, 6)
