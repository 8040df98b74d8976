"""The cache's teacher on vLLM: completions of unlabeled prompts by continuous batching, then the top-k
log-probabilities of every target position from ``prompt_logprobs`` over the exact token ids the
student will train on.

vLLM returns no full logits, so this cache holds the top-k alone (no sampled tail: the manifest says
``tail_samples = 0``) and the loss treats the tail as one bucket (``raykd.losses.bucket_log_mass``).
"""

from __future__ import annotations

import numpy as np

from raykd.cache.scorer import RowScorer
from raykd.data.examples import Prompt, prompt_ids
from raykd.data.tokens import end_of_turn_id
from raykd.vllm_support import engine_args


class VLLMTeacherScorer(RowScorer):
    """Ray Data actor: one in-process vLLM engine (``vllm.LLM``) per actor."""

    def __init__(self, cfg_dict: dict, model_dir: str, total_rows: int = 0):
        super().__init__(cfg_dict, model_dir, total_rows)
        from transformers import AutoConfig
        from vllm import LLM

        c = self.cfg.cache
        model_vocab = AutoConfig.from_pretrained(model_dir, trust_remote_code=self.cfg.models.trust_remote_code
                                                 ).get_text_config().vocab_size
        # Ids past the tokenizer (embedding rows padded for speed) are dropped: ask for that many more.
        self.asked = c.top_k + max(0, model_vocab - self.vocab)
        self.llm = LLM(**engine_args(model_dir, model_dir, c.vllm, self.cfg.models.trust_remote_code,
                                     seed=self.cfg.seed, max_logprobs=self.asked, own_gpus=True))

    def complete(self, prompts: list[Prompt]) -> list[str]:
        """Stops where ``generate`` does: vLLM reads the model's generation_config EOS ids and the tokenizer's;
        the chat template's end of turn is added."""
        from vllm import SamplingParams, TokensPrompt

        c, data = self.cfg.cache, self.cfg.data
        params = SamplingParams(max_tokens=data.max_new_tokens, temperature=c.sample_temperature if c.do_sample else 0,
                                seed=self.cfg.seed if c.do_sample else None,
                                stop_token_ids=[t for t in [end_of_turn_id(self.tokenizer)] if t is not None])
        requests = [TokensPrompt(prompt_token_ids=prompt_ids(self.tokenizer, p, data.max_seq_len)) for p in prompts]
        return [out.outputs[0].text for out in self.llm.generate(requests, params, use_tqdm=False)]

    def summarize(self, encoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from vllm import SamplingParams, TokensPrompt

        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        rows, width, k = ids.shape[0], ids.shape[1], min(self.cfg.cache.top_k, self.vocab)
        params = SamplingParams(max_tokens=1, prompt_logprobs=self.asked, detokenize=False)
        requests = [TokensPrompt(prompt_token_ids=ids[r][mask[r] == 1].tolist()) for r in range(rows)]
        values, indices = np.zeros((rows, width, k), np.float16), np.zeros((rows, width, k), self.index_dtype)
        for r, out in enumerate(self.llm.generate(requests, params, use_tqdm=False)):
            for j, ranked in enumerate(out.prompt_logprobs):
                if ranked:  # entry j: the distribution for token j (None at j = 0); the actual token included
                    values[r, j], indices[r, j] = top_k_of(ranked, k, self.vocab)
        return {"values": values, "indices": indices}


def top_k_of(ranked: dict, k: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """``{token id: Logprob}`` of one position → the ``k`` most likely ids below ``vocab`` and their
    log-probs, most likely first (``(k,)`` each)."""
    best = sorted(((lp.logprob, i) for i, lp in ranked.items() if i < vocab), reverse=True)[:k]
    return np.array([b[0] for b in best]), np.array([b[1] for b in best])
