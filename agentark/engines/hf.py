"""transformers engine: left-padded, batched generation on CPU or CUDA (bf16).

Speed comes from batching: a debate round sends every agent x question conversation in one
``generate`` call, which this engine splits into chunks of ``batch_size`` sorted by prompt length
(so each chunk pads little) and restores to the caller's order.

Prompt cache: the KV cache of every sequence a call generated (prompt + answer) is kept in a
:class:`PrefixStore`, and a later prompt that starts with one of them, token for token after the chat
template, prefills only the rest. In a debate an agent's round-1 prompt starts with its whole round-0
conversation, so round 1 prefills only the follow-up (the other agents' answers).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from agentark.defaults import DEFAULT_BATCH_SIZE
from agentark.engines.base import Completion, Conversation, SamplingParams
from agentark.models import load_model, load_tokenizer

PROMPT_CACHE_BYTES = 1 << 30
"""What the prompt cache may hold (1 GiB of keys and values, on the model's device). A debate round
of 8 questions x 3 agents x ~600 tokens on a 0.5B Qwen (12 KiB per token in bf16) is ~170 MiB, so a
round, the next one and a concurrent served debate all fit; the least recently used go first."""


class PrefixStore:
    """Finished sequences' KV caches, least recently used dropped first once over ``max_bytes``.

    Why an LRU by bytes rather than "the last call's sequences": a served debate's calls interleave
    with other requests' (the serve app batches whatever arrives), and the summariser's call comes
    between rounds, so the previous call is not always the one to continue; bytes, not entries, are
    what runs out.
    """

    def __init__(self, max_bytes: int = PROMPT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[int, ...], tuple[Any, list[tuple[Any, Any]], int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, ids: list[int], layers: list[tuple[Any, Any]]) -> None:
        """Keep the keys and values (per layer, ``[heads, len(ids), head_dim]``) of token sequence ``ids``."""
        import torch

        key = tuple(ids)
        nbytes = sum(t.numel() * t.element_size() for kv in layers for t in kv)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            if nbytes > self.max_bytes:
                return
            self._entries[key] = (torch.tensor(ids, dtype=torch.long), layers, nbytes)
            self.bytes += nbytes
            while self.bytes > self.max_bytes:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped

    def lookup(self, prompt: list[int]) -> tuple[int, list[tuple[Any, Any]] | None]:
        """The longest stored token prefix of ``prompt`` (at most all but its last token, whose logits
        the caller needs) and its keys and values; ``(0, None)`` when none."""
        import torch

        p = torch.tensor(prompt, dtype=torch.long)
        best, best_key = 0, None
        with self._lock:
            for key, (ids, _, _) in reversed(self._entries.items()):  # most recent first on ties
                n = min(len(ids), len(p))
                if n <= best:
                    continue
                differ = (ids[:n] != p[:n]).nonzero()
                common = n if len(differ) == 0 else int(differ[0, 0])
                if common > best:
                    best, best_key = common, key
            reused = min(best, len(prompt) - 1)
            if reused <= 0 or best_key is None:
                return 0, None
            self._entries.move_to_end(best_key)
            layers = self._entries[best_key][1]
        return reused, [(k[:, :reused], v[:, :reused]) for k, v in layers]


class HFEngine:
    """Generate with a ``transformers`` causal LM."""

    def __init__(self, model: Any, tokenizer: Any, model_id: str, batch_size: int = DEFAULT_BATCH_SIZE,
                 prompt_cache: bool = True, prompt_cache_bytes: int = PROMPT_CACHE_BYTES):
        if tokenizer.padding_side != "left":
            raise ValueError("HFEngine needs a left-padding tokenizer (use agentark.models.load_tokenizer)")
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = batch_size
        self.prompt_cache = prompt_cache
        self.prefixes = PrefixStore(prompt_cache_bytes)
        self._cacheable: bool | None = None  # do this model's cache layers keep every position? (after 1st call)

    @classmethod
    def from_pretrained(
        cls, name: str, device: str = "auto", dtype: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE,
        prompt_cache: bool = True,
    ) -> HFEngine:
        return cls(
            load_model(name, device=device, dtype=dtype), load_tokenizer(name), model_id=name, batch_size=batch_size,
            prompt_cache=prompt_cache,
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
        cost of short answers. With the prompt cache on, a prompt that begins with a sequence an
        earlier call generated starts from that sequence's keys and values and prefills only the
        rest; rows reuse prefixes of different lengths, so each row's cache is
        ``[pad, its prefix, pad, its new tokens]``, the pads masked out. ``model.generate`` also keeps
        finished sequences in the batch until the longest one ends; with answers of 20 to 256 tokens
        that is most of the decoding compute, so here a finished row leaves the KV cache
        (``DynamicCache.batch_select_indices``) and each step only computes live rows.
        """
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        device = self.model.device
        distinct: dict[tuple[int, ...], int] = {}
        source = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]  # row -> distinct prompt
        use_cache = self.prompt_cache and self._cacheable is not False
        hits = [self.prefixes.lookup(list(p)) if use_cache else (0, None) for p in distinct]
        reused = [n for n, _ in hits]
        # Every row after the first with its prompt gets that prompt's KV cache without prefilling it.
        cached = [
            len(p) if source.index(s) < row else reused[s]
            for row, (p, s) in enumerate(zip(prompts, source, strict=True))
        ]
        batch = self.tokenizer.pad({"input_ids": [list(p[n:]) for p, n in zip(distinct, reused, strict=True)]},
                                   padding=True, return_tensors="pt").to(device)
        input_ids, attention = batch["input_ids"], batch["attention_mask"]
        offsets = torch.tensor(reused, device=device).unsqueeze(-1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0) + offsets
        cache = DynamicCache(config=self.model.config)
        if max(reused) > 0:
            width = max(reused)
            prefix_mask = torch.arange(width, device=device).unsqueeze(0) >= width - offsets
            attention = torch.cat([prefix_mask.to(attention.dtype), attention], dim=-1)
            load_prefixes(cache, hits, width, device)
        eos = torch.tensor(self._eos_ids(), device=device)
        generator = None
        if not sampling.greedy and sampling.seed is not None:
            generator = torch.Generator(device=device).manual_seed(sampling.seed)
        live = torch.arange(len(prompts), device=device)  # row -> index in `prompts`
        tokens: list[list[int]] = [[] for _ in prompts]
        finish = ["length"] * len(prompts)
        start = time.perf_counter()
        with torch.inference_mode():
            logits = self._next_logits(input_ids, attention, positions, cache)
            if self._cacheable is None:
                self._cacheable = all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)
            keep_kv = self.prompt_cache and self._cacheable
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
                    if keep_kv:
                        self._remember(cache, attention, range(len(live)), live, prompts, tokens)
                    break
                keep = (~done).nonzero().squeeze(-1)
                if len(keep) < len(live):
                    if keep_kv:
                        self._remember(cache, attention, done.nonzero().squeeze(-1).tolist(), live, prompts, tokens)
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

    def _remember(self, cache, attention, rows, live, prompts: list[list[int]], tokens: list[list[int]]) -> None:
        """Store the KV cache of batch rows ``rows``: each holds its prompt and all its tokens but the
        last (never fed back), at the positions its attention mask marks."""
        for row in rows:
            index = int(live[row])
            ids = list(prompts[index]) + tokens[index][:-1]
            mask = attention[row].bool()
            if int(mask.sum()) != len(ids):  # cannot happen; a wrong entry would change later texts
                raise RuntimeError(f"hf prompt cache: row holds {int(mask.sum())} positions, expected {len(ids)}")
            self.prefixes.put(ids, [(layer.keys[row][:, mask], layer.values[row][:, mask]) for layer in cache.layers])

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


def load_prefixes(cache, hits: list[tuple[int, list[tuple[Any, Any]] | None]], width: int, device) -> None:
    """Fill an empty ``cache`` with each row's reused prefix, right-aligned in ``width`` positions
    (zeros before it, masked out by the caller's attention mask)."""
    filled = next(layers for _, layers in hits if layers is not None)
    for i, layer in enumerate(cache.layers):
        k0, v0 = filled[i]
        keys = k0.new_zeros(len(hits), k0.shape[0], width, k0.shape[-1])
        values = v0.new_zeros(len(hits), v0.shape[0], width, v0.shape[-1])
        for row, (n, layers) in enumerate(hits):
            if layers is not None:
                keys[row, :, width - n:] = layers[i][0]
                values[row, :, width - n:] = layers[i][1]
        layer.update(keys.to(device), values.to(device))


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
