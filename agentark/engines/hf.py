"""transformers engine: left-padded, batched generation on CPU or CUDA (bf16).

Speed comes from batching: a debate round sends every agent x question conversation in one
``generate`` call, which this engine splits into chunks of ``batch_size`` sorted by prompt length
(so each chunk pads little) and restores to the caller's order.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from agentark.defaults import DEFAULT_BATCH_SIZE
from agentark.engines.base import Completion, Conversation, SamplingParams
from agentark.models import load_model, load_tokenizer


class HFEngine:
    """Generate with a ``transformers`` causal LM."""

    def __init__(self, model: Any, tokenizer: Any, model_id: str, batch_size: int = DEFAULT_BATCH_SIZE):
        if tokenizer.padding_side != "left":
            raise ValueError("HFEngine needs a left-padding tokenizer (use agentark.models.load_tokenizer)")
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, name: str, device: str = "auto", dtype: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE
    ) -> HFEngine:
        return cls(
            load_model(name, device=device, dtype=dtype), load_tokenizer(name), model_id=name, batch_size=batch_size
        )

    def _encode(self, conversations: list[Conversation]) -> list[list[int]]:
        texts = self.tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        if not conversations:
            return []
        encoded = self._encode(conversations)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        # Even chunks (36 prompts at batch_size 32 -> 18 + 18, not 32 + 4): same passes, less padding.
        n_chunks = -(-len(order) // self.batch_size)
        size = -(-len(order) // n_chunks)
        for n, start in enumerate(range(0, len(order), size)):
            chunk = order[start : start + size]
            chunk_sampling = sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + n)
            for i, completion in zip(
                chunk, self._generate_chunk([encoded[i] for i in chunk], chunk_sampling), strict=True
            ):
                results[i] = completion
        return results  # type: ignore[return-value]

    def _generate_chunk(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Completion]:
        """Decode one left-padded batch, dropping each sequence from the batch as soon as it ends.

        Identical prompts (a debate's first round, self-consistency's k samples) are prefilled once
        and their KV cache is copied to each row: on a compute-bound CPU the prefill is most of the
        cost of short answers. ``model.generate`` also keeps finished sequences in the batch until
        the longest one ends; with answers of 20 to 256 tokens that is most of the decoding compute,
        so here a finished row leaves the KV cache (``DynamicCache.batch_select_indices``) and each
        step only computes live rows.
        """
        import torch
        from transformers import DynamicCache

        device = self.model.device
        distinct: dict[tuple[int, ...], int] = {}
        source = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]  # row -> distinct prompt
        # Every row after the first with its prompt gets that prompt's KV cache without prefilling it.
        cached = [
            len(p) if source.index(s) < row else 0 for row, (p, s) in enumerate(zip(prompts, source, strict=True))
        ]
        batch = self.tokenizer.pad({"input_ids": [list(p) for p in distinct]}, padding=True, return_tensors="pt").to(
            device
        )
        input_ids, attention = batch["input_ids"], batch["attention_mask"]
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        eos = torch.tensor(self._eos_ids(), device=device)
        generator = None
        if not sampling.greedy and sampling.seed is not None:
            generator = torch.Generator(device=device).manual_seed(sampling.seed)
        cache = DynamicCache(config=self.model.config)
        live = torch.arange(len(prompts), device=device)  # row -> index in `prompts`
        tokens: list[list[int]] = [[] for _ in prompts]
        finish = ["length"] * len(prompts)
        start = time.perf_counter()
        with torch.inference_mode():
            logits = self._next_logits(input_ids, attention, positions, cache)
            if len(distinct) < len(prompts):
                rows = torch.tensor(source, device=device)
                cache.batch_select_indices(rows)
                logits, attention, positions = logits[rows], attention[rows], positions[rows]
            for step in range(sampling.max_new_tokens):
                next_tokens = pick_next_tokens(logits, sampling, generator)
                done = torch.zeros_like(next_tokens, dtype=torch.bool)
                if not sampling.ignore_eos:
                    done = torch.isin(next_tokens, eos)
                for row, (index, token) in enumerate(zip(live.tolist(), next_tokens.tolist(), strict=True)):
                    tokens[index].append(token)
                    if sampling.stop and not done[row]:  # a stop string ends the row like EOS
                        done[row] = self._stopped(tokens[index], sampling.stop)
                    if done[row]:
                        finish[index] = "stop"
                if step + 1 == sampling.max_new_tokens or bool(done.all()):
                    break
                keep = (~done).nonzero().squeeze(-1)
                if len(keep) < len(live):
                    cache.batch_select_indices(keep)
                    live, attention, positions, next_tokens = (
                        live[keep],
                        attention[keep],
                        positions[keep],
                        next_tokens[keep],
                    )
                attention = torch.cat([attention, attention.new_ones(len(live), 1)], dim=-1)
                positions = positions[:, -1:] + 1
                logits = self._next_logits(next_tokens.unsqueeze(-1), attention, positions, cache)
        latency = time.perf_counter() - start
        return [
            Completion(cut_at_stop(self.tokenizer.decode(toks, skip_special_tokens=True), sampling.stop),
                       len(prompt), len(toks), latency, reason, shared)
            for prompt, toks, reason, shared in zip(prompts, tokens, finish, cached, strict=True)
        ]

    def _stopped(self, tokens: list[int], stop: tuple[str, ...]) -> bool:
        """Does the text end in (or just pass) a stop string? Only the last few tokens are decoded."""
        tail = self.tokenizer.decode(tokens[-(max(map(len, stop)) + 4):], skip_special_tokens=True)
        return any(s in tail for s in stop)

    def _next_logits(self, input_ids, attention, positions, cache):
        """Logits (float32) of the next token for each row, extending ``cache``."""
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                         cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float()

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids


def pick_next_tokens(logits, sampling: SamplingParams, generator=None):
    """Greedy argmax, or a temperature + nucleus (top-p) sample per row, with transformers' own
    logits warpers (the ones ``model.generate`` applies), so sampling means the same in both."""
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    if sampling.greedy:
        return logits.argmax(-1)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(sampling.temperature)])
    if sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(sampling.top_p, min_tokens_to_keep=1))
    probs = torch.softmax(warpers(None, logits.float()), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to the first stop string, which is not included (OpenAI's ``stop``)."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(cuts)] if cuts else text
