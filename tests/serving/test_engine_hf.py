"""The transformers engine's batched, KV-cached decoding equals Hugging Face's own greedy generate."""

import torch

from raykd.builtin.presets import TOKENIZER_DIR
from raykd.models import resolve_model
from raykd.tokens import encode_lm_row
from serving.engine_hf import GenerationRequest, TransformersEngine

PROMPTS = ["question: what are fox and red?\nanswer:", "question: what is a cat?\nanswer:", "hello"]


def make_engine() -> TransformersEngine:
    return TransformersEngine(resolve_model("builtin:student"), str(TOKENIZER_DIR), 8, 0.01)


def test_batched_greedy_decoding_matches_hf_generate_row_by_row():
    engine = make_engine()
    tok = engine.tokenizer
    ids = [encode_lm_row(tok, p, None, 10**9)[0] for p in PROMPTS]
    requests = [GenerationRequest(i, max_tokens=m, temperature=0.0) for i, m in zip(ids, (10, 6, 8))]
    texts, finishes, counts = [""] * 3, [None] * 3, [0] * 3
    for step in engine.decode_steps(requests):
        for i, c in enumerate(step):
            if c is not None:
                texts[i], counts[i] = texts[i] + c["text"], counts[i] + c["new_tokens"]
                finishes[i] = c["finish_reason"] or finishes[i]
    for i, request in enumerate(requests):  # one prompt at a time, no padding: the reference
        reference = engine.model.generate(torch.tensor([request.prompt_ids]), max_new_tokens=request.max_tokens,
                                          do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        new = reference[0, len(request.prompt_ids):].tolist()
        assert texts[i] == tok.decode(new, skip_special_tokens=True)
        assert counts[i] == len(new)
        assert finishes[i] == ("stop" if new[-1] == tok.eos_token_id else "length")
