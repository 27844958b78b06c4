"""llama.cpp engine: GGUF files on CPU, many sequences per decode step, through llama.cpp's own server.

The engine embeds llama.cpp's C++ server in-process (the ``xllamacpp`` wheel: prebuilt, no compiler,
no dependencies). That server is what llama.cpp users deploy: ``n_parallel`` slots decoded together
in one batch per step (continuous batching: a finished slot takes the next queued request at once),
a per-slot prompt cache, sampling with per-request seeds. Every conversation of a ``generate`` call is
sent as one chat-completion request from a thread pool, so a debate round (agents x questions)
becomes one stream of requests that the server batches.

Why not ``llama-cpp-python``: it compiles for ~11 min on 2 cores, its native build crashed on an AMX
CPU of this machine kind, and its ``Llama`` API decodes one sequence at a time; batching there is a
hand-written loop over ``llama_batch``. Here the batching is llama.cpp's own.

Sampling matches the other engines: temperature and top-p only (llama.cpp's default top-k 40,
min-p 0.05 and repetition penalty are switched off), temperature 0 is greedy.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentark.engines.base import Completion, Conversation, EngineRequestError, SamplingParams, TextSink

logger = logging.getLogger(__name__)


class LlamaCppError(RuntimeError):
    """llama.cpp refused a request or a model file; the message is llama.cpp's, with the file named."""


class LlamaCppContextError(LlamaCppError, EngineRequestError):
    """A prompt (plus its answer) does not fit one slot's context."""


class LlamaCppEngine:
    """Generate with llama.cpp on a GGUF file: a pack as shipped, or HF weights converted once."""

    thread_safe = True  # concurrent calls share the slots and are batched per decode step

    def __init__(self, model: str, n_parallel: int = 32, n_ctx_per_seq: int = 2048, n_threads: int | None = None,
                 outtype: str | None = None):
        """``n_parallel`` sequences decode together, each with ``n_ctx_per_seq`` tokens of context
        (prompt + answer; the KV cache for all slots is allocated up front). ``outtype`` is the GGUF type
        HF weights are converted to (default f16); packs run in their own quantisation unless it is
        given (``outtype=f16`` runs a base pack like its f16-converted students)."""
        try:
            import xllamacpp
        except ImportError as exc:
            raise ImportError("the llamacpp engine needs llama.cpp's server engine: pip install xllamacpp") from exc
        from agentark.models.gguf import resolve_gguf

        if n_parallel < 1 or n_ctx_per_seq < 64:
            raise ValueError("llamacpp engine: n_parallel must be >= 1 and n_ctx_per_seq >= 64")
        self.model_id = model
        self.path = resolve_gguf(model, outtype)  # type: ignore[arg-type]
        self.n_parallel = n_parallel
        self.n_ctx_per_seq = n_ctx_per_seq
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.n_parallel = n_parallel
        params.n_ctx = n_parallel * n_ctx_per_seq  # shared by the slots: n_ctx_per_seq each
        for cpu in (params.cpuparams, params.cpuparams_batch):
            cpu.n_threads = n_threads or os.cpu_count() or 1
            # No busy-waiting between ops: with 2 cores and any other process running, spinning threads
            # wait on a descheduled peer (measured: poll 0 vs the default 50, 34.7 vs 28.8 tok/s idle).
            cpu.poll = 0
        params.verbosity = -1  # library code does not print; errors come back in the responses
        # The embedded server also opens an HTTP port on 127.0.0.1; we call it in-process only, so
        # that port gets a random key nobody knows.
        params.api_keys = [secrets.token_urlsafe(32)]
        try:
            self.server = xllamacpp.Server(params)
        except Exception as exc:  # xllamacpp raises a bare RuntimeError/ValueError on a bad file
            raise LlamaCppError(f"llama.cpp could not load {self.path}: {exc}") from exc
        self._pool = ThreadPoolExecutor(max_workers=n_parallel, thread_name_prefix="llamacpp")

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        bodies = [self.request(c, sampling, i) for i, c in enumerate(conversations)]
        return list(self._pool.map(self._complete, bodies))

    def request(self, conversation: Conversation, sampling: SamplingParams, index: int = 0) -> dict[str, Any]:
        """The chat-completion body for one conversation; seeds are offset by position so identical
        conversations (a debate's first round, self-consistency samples) do not sample alike."""
        body: dict[str, Any] = {
            "messages": conversation,
            "max_tokens": sampling.max_new_tokens,
            "temperature": max(sampling.temperature, 0.0),  # 0 is greedy in llama.cpp
            "top_p": sampling.top_p,
            "top_k": 0,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "ignore_eos": sampling.ignore_eos,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = (sampling.seed + index) % (2**32 - 1)  # 2**32 - 1 means "random" to llama.cpp
        return body

    def _complete(self, body: dict[str, Any]) -> Completion:
        start = time.perf_counter()
        out = self.server.handle_chat_completions(body)
        latency = time.perf_counter() - start
        if "error" in out:
            raise self._error(out["error"])
        choice, usage = out["choices"][0], out["usage"]
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            latency_s=latency,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )

    def stream(self, conversation: Conversation, sampling: SamplingParams, sink: TextSink) -> Completion:
        """One conversation through llama.cpp's own streaming: ``sink`` gets each token's text as the
        slot decodes it, alongside every other request the server is batching."""
        body = {**self.request(conversation, sampling), "stream": True, "stream_options": {"include_usage": True}}
        pieces: list[str] = []
        state: dict[str, Any] = {"finish": "stop", "usage": None, "error": None}

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if "error" in chunk:
                state["error"] = chunk["error"]
                return True
            if chunk.get("usage"):
                state["usage"] = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if choice.get("finish_reason"):
                    state["finish"] = "length" if choice["finish_reason"] == "length" else "stop"
                if text := (choice.get("delta") or {}).get("content"):
                    pieces.append(text)
                    if sink(text):
                        return True
            return False

        start = time.perf_counter()
        out = self.server.handle_chat_completions(body, on_chunk)
        if isinstance(out, dict) and "error" in out:
            state["error"] = out["error"]
        if state["error"] is not None:
            raise self._error(state["error"])
        usage = state["usage"] or {"prompt_tokens": 0, "completion_tokens": len(pieces)}  # stopped early
        return Completion("".join(pieces), usage["prompt_tokens"], usage["completion_tokens"],
                          time.perf_counter() - start, state["finish"])

    def _error(self, error: Any) -> LlamaCppError:
        message = error.get("message", error) if isinstance(error, dict) else error
        if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
            return LlamaCppContextError(f"llama.cpp ({self.path.name}): {message} (raise --engine-option n_ctx_per_seq)")
        return LlamaCppError(f"llama.cpp ({self.path.name}): {message}")

    def close(self) -> None:
        """Stop the server's threads and free the model and KV cache now rather than at garbage collection."""
        self._pool.shutdown(wait=True)
        self.server = None  # type: ignore[assignment]
