"""transformers engine: left-padded, batched generation on CPU or CUDA (bf16).

Speed comes from batching: a debate round sends every agent x question conversation in one
``generate`` call, which this engine splits into chunks of ``batch_size`` sorted by prompt length
(so each chunk pads little) and restores to the caller's order.
"""

from __future__ import annotations

import time
from typing import Any

from agentark.engines.base import Completion, Conversation, SamplingParams


class HFEngine:
    """Generate with a ``transformers`` causal LM."""

    def __init__(self, model: Any, tokenizer: Any, model_id: str, batch_size: int = 32):
        if tokenizer.padding_side != "left":
            raise ValueError("HFEngine needs a left-padding tokenizer (use agentark.models.load_tokenizer)")
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, name: str, device: str = "auto", dtype: str = "auto", batch_size: int = 32) -> HFEngine:
        from agentark.models import load_model, load_tokenizer

        return cls(load_model(name, device=device, dtype=dtype), load_tokenizer(name), model_id=name, batch_size=batch_size)

    def _encode(self, conversations: list[Conversation]) -> list[list[int]]:
        texts = self.tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        import torch

        if not conversations:
            return []
        encoded = self._encode(conversations)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        # Even chunks (36 prompts at batch_size 32 -> 18 + 18, not 32 + 4): same passes, less padding.
        n_chunks = -(-len(order) // self.batch_size)
        size = -(-len(order) // n_chunks)
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            for i, completion in zip(chunk, self._generate_chunk([encoded[i] for i in chunk], sampling)):
                results[i] = completion
        return results  # type: ignore[return-value]

    def _generate_chunk(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Completion]:
        import torch

        batch = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.model.device)
        eos_ids = self._eos_ids()
        kwargs: dict[str, Any] = dict(
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=eos_ids,
        )
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
        if sampling.ignore_eos:
            kwargs["min_new_tokens"] = sampling.max_new_tokens
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**batch, **kwargs)
        latency = time.perf_counter() - start
        new_tokens = out[:, batch["input_ids"].shape[1] :].tolist()
        completions = []
        for prompt, tokens in zip(prompts, new_tokens):
            n, finish = len(tokens), "length"
            for j, tok in enumerate(tokens):
                if tok in eos_ids and not sampling.ignore_eos:
                    n, finish = j + 1, "stop"
                    break
            text = self.tokenizer.decode(tokens[:n], skip_special_tokens=True)
            completions.append(Completion(text, len(prompt), n, latency, finish))
        return completions

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids
