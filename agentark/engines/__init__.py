"""Engines: one ``generate(conversations, sampling) -> completions`` interface, four backends.

``llamacpp`` (GGUF on CPU through llama.cpp's server engine), ``hf`` (transformers, CPU or CUDA),
``openai`` (any OpenAI-compatible server), ``vllm`` (optional, GPU). ``auto`` picks the fastest one
this machine has: vLLM, else transformers on a CUDA GPU; llama.cpp on a CPU. Backends are imported
lazily so a missing optional dependency only matters when chosen.
"""

from __future__ import annotations

import importlib.util

from agentark.engines.base import Completion, Conversation, Engine, Message, SamplingParams

ENGINE_NAMES = ("auto", "llamacpp", "hf", "openai", "vllm")


def resolve_engine_kind(kind: str) -> str:
    """``auto`` -> the concrete engine for this machine; any other valid name unchanged."""
    if kind not in ENGINE_NAMES:
        raise ValueError(f"unknown engine {kind!r}; valid engines: {', '.join(ENGINE_NAMES)}")
    if kind != "auto":
        return kind
    import torch

    if torch.cuda.is_available():
        return "vllm" if importlib.util.find_spec("vllm") else "hf"
    return "llamacpp" if importlib.util.find_spec("xllamacpp") else "hf"


def get_engine(kind: str, model: str, **options) -> Engine:
    """Build an engine by name.

    ``options`` go to the backend: ``n_parallel``, ``n_ctx_per_seq``, ``n_threads``, ``outtype``
    (llamacpp); ``device``, ``dtype``, ``batch_size`` (hf); ``base_url``, ``api_key_env``,
    ``concurrency``, ``max_retries``, ``timeout_s`` (openai); ``dtype``, ``gpu_memory_utilization``,
    ``max_model_len``, ``tensor_parallel_size`` (vllm).
    """
    kind = resolve_engine_kind(kind)
    if kind == "llamacpp":
        from agentark.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(model, **options)
    if kind == "hf":
        from agentark.engines.hf import HFEngine

        return HFEngine.from_pretrained(model, **options)
    if kind == "openai":
        from agentark.engines.openai import OpenAIEngine

        return OpenAIEngine(model, **options)
    from agentark.engines.vllm import VLLMEngine

    return VLLMEngine(model, **options)


__all__ = ["ENGINE_NAMES", "Completion", "Conversation", "Engine", "Message", "SamplingParams", "get_engine",
           "resolve_engine_kind"]
