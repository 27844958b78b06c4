"""llama.cpp engine: GGUF files on CPU, many sequences per decode step, through llama.cpp's own server.

The engine embeds llama.cpp's C++ server in-process (the ``xllamacpp`` wheel: prebuilt, no compiler,
no dependencies). That server is what llama.cpp users deploy: ``n_parallel`` slots decoded together
in one batch per step (continuous batching: a finished slot takes the next queued request at once),
a per-slot prompt cache, sampling with per-request seeds. Every conversation of a ``generate`` call is
sent as one chat-completion request by one of ``n_parallel`` slot workers (:class:`SlotScheduler`),
so a debate round (agents x questions) becomes one stream of requests that the server batches, and
each request goes to the slot that already holds most of its prompt.

Why not ``llama-cpp-python``: it compiles for ~11 min on 2 cores, its native build crashed on an AMX
CPU of this machine kind, and its ``Llama`` API decodes one sequence at a time; batching there is a
hand-written loop over ``llama_batch``. Here the batching is llama.cpp's own.

Sampling matches the other engines: temperature and top-p only (llama.cpp's default top-k 40,
min-p 0.05 and repetition penalty are switched off), temperature 0 is greedy.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from agentark.engines.base import (
    Completion,
    Conversation,
    EngineRequestError,
    SamplingParams,
    TextSink,
    cached_prompt_tokens,
)

logger = logging.getLogger(__name__)


class LlamaCppError(RuntimeError):
    """llama.cpp refused a request or a model file; the message is llama.cpp's, with the file named."""


class LlamaCppContextError(LlamaCppError, EngineRequestError):
    """A prompt (plus its answer) does not fit one slot's context."""


class LlamaCppEngine:
    """Generate with llama.cpp on a GGUF file: a pack as shipped, or HF weights converted once."""

    thread_safe = True  # concurrent calls share the slots and are batched per decode step

    def __init__(self, model: str, n_parallel: int = 32, n_ctx_per_seq: int = 2048, n_threads: int | None = None,
                 outtype: str | None = None, prompt_cache: bool = True):
        """``n_parallel`` sequences decode together, each with ``n_ctx_per_seq`` tokens of context
        (prompt + answer; the KV cache for all slots is allocated up front). ``outtype`` is the GGUF type
        HF weights are converted to (default f16); packs run in their own quantisation unless it is
        given (``outtype=f16`` runs a base pack like its f16-converted students). ``prompt_cache=False``
        prefills every prompt in full (no slot affinity, llama.cpp's ``cache_prompt`` off): llama.cpp
        does not promise bit-identical logits for a prefix taken from the cache, so this is the way to
        check that reuse changed nothing."""
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
        self.prompt_cache = prompt_cache
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
        self._slots = SlotScheduler(n_parallel, affinity=prompt_cache)
        weakref.finalize(self, self._slots.close, False)  # an engine nobody closed still stops its workers

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        futures = self._slots.submit([(conversation_key(c), partial(self._complete, self.request(c, sampling, i)))
                                      for i, c in enumerate(conversations)])
        return [f.result() for f in futures]

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
            "cache_prompt": self.prompt_cache,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = (sampling.seed + index) % (2**32 - 1)  # 2**32 - 1 means "random" to llama.cpp
        return body

    def _complete(self, body: dict[str, Any], slot: int) -> Completion:
        start = time.perf_counter()
        out = self.server.handle_chat_completions({**body, "id_slot": slot})
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
            cached_prompt_tokens=cached_prompt_tokens(usage),
        )

    def stream(self, conversation: Conversation, sampling: SamplingParams, sink: TextSink) -> Completion:
        """One conversation through llama.cpp's own streaming: ``sink`` gets each token's text as the
        slot decodes it, alongside every other request the server is batching."""
        body = {**self.request(conversation, sampling), "stream": True, "stream_options": {"include_usage": True}}
        (future,) = self._slots.submit([(conversation_key(conversation), partial(self._stream, body, sink))])
        return future.result()

    def _stream(self, body: dict[str, Any], sink: TextSink, slot: int) -> Completion:
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
        out = self.server.handle_chat_completions({**body, "id_slot": slot}, on_chunk)
        if isinstance(out, dict) and "error" in out:
            state["error"] = out["error"]
        if state["error"] is not None:
            raise self._error(state["error"])
        usage = state["usage"] or {"prompt_tokens": 0, "completion_tokens": len(pieces)}  # stopped early
        return Completion("".join(pieces), usage["prompt_tokens"], usage["completion_tokens"],
                          time.perf_counter() - start, state["finish"], cached_prompt_tokens(usage))

    def _error(self, error: Any) -> LlamaCppError:
        message = error.get("message", error) if isinstance(error, dict) else error
        if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
            return LlamaCppContextError(
                f"llama.cpp ({self.path.name}): {message} (raise --engine-option n_ctx_per_seq)"
            )
        return LlamaCppError(f"llama.cpp ({self.path.name}): {message}")

    def close(self) -> None:
        """Stop the server's threads and free the model and KV cache now rather than at garbage collection."""
        self._slots.close()
        self.server = None  # type: ignore[assignment]


def conversation_key(conversation: Conversation) -> str:
    """A conversation as one string in which a continuation starts with its earlier turn's key (see
    :meth:`SlotScheduler.held_after`): a common prefix of keys is a common prefix of prompts."""
    return "".join(_message_key(m["role"], m["content"]) for m in conversation)


def _message_key(role: str, content: str) -> str:
    return f"\x1e{role}\x1f{content}"  # record/unit separators: never in a role name


@dataclass
class _Job:
    key: str
    run: Callable[[int], Completion]
    number: int  # submission order
    future: Future[Completion] = field(default_factory=Future)


class SlotScheduler:
    """One worker thread per llama.cpp slot; a free slot takes the waiting request whose conversation
    best continues the one it last served, and sends it with ``id_slot`` naming itself.

    Why slot affinity here, derived from the conversations, and not a per-conversation key passed by
    the caller: an engine stays ``generate(conversations, sampling)``, the debate needs no notion of
    slots, and any multi-turn caller (a debate round, a served chat's next turn) gets the reuse for
    free. The conversation itself is the key: a debate agent's next prompt starts with its question and
    its own answer, which is what its slot's KV cache holds, and llama.cpp's ``cache_prompt`` then
    prefills only the rest. Letting the server choose (``id_slot`` -1) gives each request, as it
    arrives, the idle slot whose cache resembles it most, so a round's first requests take the slots
    that later ones needed; pinning each request to one slot would leave other slots idle while it
    waits. A pull by free slots keeps every slot busy and still sends most requests to the slot that
    holds their prefix.

    A free slot looks only at requests submitted less than ``lookahead`` after the oldest waiting one,
    so that one is passed over by at most ``lookahead - 1`` better matches and never waits for ever.
    """

    def __init__(self, n_slots: int, affinity: bool = True, lookahead: int | None = None):
        self.affinity = affinity
        self.lookahead = lookahead or 8 * n_slots
        self._waiting: list[_Job] = []  # in submission order
        self._numbers = itertools.count()
        self._changed = threading.Condition()
        self._closed = False
        self._workers = [threading.Thread(target=self._work, args=(slot,), name=f"llamacpp-slot-{slot}", daemon=True)
                         for slot in range(n_slots)]
        for worker in self._workers:
            worker.start()

    def submit(self, requests: list[tuple[str, Callable[[int], Completion]]]) -> list[Future[Completion]]:
        """Queue ``run(slot)`` for each ``(key, run)``, ``key`` being its conversation's
        :func:`conversation_key`. A batch is queued at once, so that the free slots choose among all
        of it rather than the first to wake taking the first request."""
        with self._changed:
            if self._closed:
                raise RuntimeError("the llamacpp engine is closed")
            jobs = [_Job(key, run, next(self._numbers)) for key, run in requests]
            self._waiting.extend(jobs)
            self._changed.notify_all()
        return [job.future for job in jobs]

    @staticmethod
    def held_after(job_key: str, completion: Completion) -> str:
        """What a slot holds after serving a conversation: its prompt and the answer it wrote."""
        return job_key + _message_key("assistant", completion.text)

    def _take(self, held: str) -> _Job | None:
        """The next request for a slot holding ``held`` (the longest common prefix, oldest first on a
        tie); ``None`` once closed and drained."""
        with self._changed:
            while not self._waiting and not self._closed:
                self._changed.wait()
            if not self._waiting:
                return None
            best = 0
            if self.affinity and held:
                limit = self._waiting[0].number + self.lookahead
                window = itertools.takewhile(lambda job: job.number < limit, self._waiting)
                shared = [len(os.path.commonprefix([held, job.key])) for job in window]
                best = shared.index(max(shared))
            return self._waiting.pop(best)

    def _work(self, slot: int) -> None:
        held = ""
        while (job := self._take(held)) is not None:
            held = self._serve(job, slot, held)
            del job  # a waiting worker must not keep the engine (and its model) alive

    def _serve(self, job: _Job, slot: int, held: str) -> str:
        """Run ``job`` on ``slot``; returns what the slot holds afterwards."""
        if not job.future.set_running_or_notify_cancel():
            return held
        try:
            completion = job.run(slot)
        except BaseException as exc:  # delivered to the caller through the future
            job.future.set_exception(exc)
            return held
        job.future.set_result(completion)
        return self.held_after(job.key, completion)

    def close(self, wait: bool = True) -> None:
        """Serve what is queued, then stop the workers (``wait``: until they have stopped)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if wait:
            for worker in self._workers:
                worker.join()
