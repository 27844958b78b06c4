"""Engines: one ``generate(conversations, sampling) -> completions`` interface, four backends.

``llamacpp`` (GGUF on CPU through llama.cpp's server engine), ``hf`` (transformers, CPU or CUDA),
``openai`` (any OpenAI-compatible server), ``vllm`` (optional, GPU). ``auto`` picks the fastest one
this machine has: vLLM, else transformers on a CUDA GPU; on a CPU, transformers in bf16 where the CPU
has native bf16 (AMX / AVX512-BF16: 1.5B debate work 61 tok/s against llama.cpp's 16 on the packs'
K-quants, whose prebuilt wheel has no AMX kernels) and llama.cpp elsewhere (AVX2: 1.3x the
transformers engine on the 1.5B; README Speed). Each backend imports its library (torch, openai, vllm,
xllamacpp) when it is built, so a missing optional dependency only matters when chosen.
"""

from __future__ import annotations

from agentark.engines.base import Completion, Conversation, Engine, Message, SamplingParams
from agentark.engines.hf import HFEngine
from agentark.engines.llamacpp import LlamaCppEngine
from agentark.engines.openai import OpenAIEngine
from agentark.engines.settings import (
    ENGINE_NAMES,
    ENGINE_SETTINGS,
    EngineSettings,
    HFSettings,
    LlamaCppSettings,
    OpenAISettings,
    VLLMSettings,
    engine_settings,
    resolve_engine_kind,
)
from agentark.engines.vllm import VLLMEngine


def with_batch_size(kind: str, options: dict, batch_size: int) -> dict:
    """``options`` plus the stage's batch size under the engine's own name for it (its settings'
    ``batch_field``: ``batch_size`` for hf, ``n_parallel`` for llamacpp), unless already set."""
    options = dict(options)
    if (name := ENGINE_SETTINGS[resolve_engine_kind(kind)].batch_field) is not None:
        options.setdefault(name, batch_size)
    return options


def close_engine(engine: Engine) -> None:
    """Free an engine's model and threads now (engines that hold a server have ``close``)."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()


def get_engine(kind: str, model: str, **options) -> Engine:
    """Build an engine by name; ``options`` are checked against its typed settings
    (:mod:`agentark.engines.settings`) before anything loads, so a typo is a one-line ``ValueError``."""
    return build_engine(model, engine_settings(kind, options))


def build_engine(model: str, settings: EngineSettings) -> Engine:
    """The engine ``settings`` describe (their ``kind`` names the backend), serving ``model``.

    Every field is passed, defaults included, so the settings are the one place defaults live and
    what :meth:`EngineSettings.identity` hashes is what the backend runs with."""
    options, kind = settings.model_dump(exclude={"kind"}), settings.kind
    if kind == "llamacpp":
        return LlamaCppEngine(model, **options)
    if kind == "hf":
        return HFEngine.from_pretrained(model, **options)
    if kind == "openai":
        return OpenAIEngine(model, **options)
    return VLLMEngine(model, **options)


__all__ = ["ENGINE_NAMES", "ENGINE_SETTINGS", "Completion", "Conversation", "Engine", "EngineSettings", "HFSettings",
           "LlamaCppSettings", "Message", "OpenAISettings", "SamplingParams", "VLLMSettings", "build_engine",
           "close_engine", "engine_settings", "get_engine", "resolve_engine_kind", "with_batch_size"]
