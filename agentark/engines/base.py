"""The one interface every generation backend implements.

Multi-agent systems only ever talk to an :class:`Engine`: a batch of chat conversations in, one
:class:`Completion` per conversation out. Keeping it this small is what lets the same debate run on
transformers, vLLM or any OpenAI-compatible server, and lets teacher and student be different models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import Field
from pydantic.dataclasses import dataclass as validated_dataclass

from agentark.defaults import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPERATURE

Message = dict[str, str]
"""A chat message, ``{"role": "system"|"user"|"assistant", "content": str}`` (OpenAI / TRL style)."""

Conversation = list[Message]


@validated_dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by all engines (names follow vLLM / OpenAI). The one declaration of the
    sampling fields: :class:`agentark.config.SamplingConfig`, their user-facing form in every stage config,
    takes its fields from here, and turns into one of these per chunk."""

    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling p.")
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1, description="Max generated tokens per agent turn.")
    seed: int | None = None  # per request / chunk; SamplingConfig's run seed makes it (chunk_seed)
    # Forces exactly max_new_tokens per completion (EOS is ignored). Only benchmarks use it, so that
    # a naive loop and a batched run do the same amount of work.
    ignore_eos: bool = False
    # Strings that end a completion where they first appear (excluded from the text), as OpenAI's
    # ``stop``; lm-eval sends its task's ``until`` strings this way.
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Completion:
    """One generated answer plus the accounting every later stage needs (tokens, latency)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    # Wall time the caller waited for this completion. In a batch every member waits for the whole
    # batch, so members share the batch's latency: that is the latency a user of the batch sees.
    latency_s: float
    finish_reason: str = "stop"  # "stop" | "length"
    # Of ``prompt_tokens``, those served from a prompt (prefix) cache instead of being prefilled:
    # a debate's later rounds start with what the agent's conversation already held.
    cached_prompt_tokens: int = 0


def cached_prompt_tokens(usage: dict) -> int:
    """Prompt tokens a server took from its prompt cache, from an OpenAI-style ``usage``
    (``prompt_tokens_details.cached_tokens``; llama.cpp's server fills it with its ``timings.cache_n``)."""
    return int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


@runtime_checkable
class Engine(Protocol):
    """Generates completions for a batch of conversations."""

    model_id: str

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        """Return one completion per conversation, in order. Implementations batch internally."""
        ...


class EngineRequestError(ValueError):
    """The engine cannot serve a request as asked (e.g. it is longer than the context): the caller's
    error, answered with a 4xx by a server, not a failure of the engine."""


TextSink = Callable[[str], bool]
"""Receives each piece of text as it is generated; returns True to stop generating (client gone)."""


@runtime_checkable
class StreamingEngine(Engine, Protocol):
    """An engine that can also hand out one conversation's text token by token (for ``stream=true``)."""

    def stream(self, conversation: Conversation, sampling: SamplingParams, sink: TextSink) -> Completion:
        """Generate one completion, passing its text to ``sink`` piece by piece; return it whole."""
        ...
