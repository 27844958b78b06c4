"""Engines: one ``generate(conversations, sampling) -> completions`` interface, three backends.

``hf`` (transformers, CPU or CUDA), ``openai`` (any OpenAI-compatible server), ``vllm`` (optional,
GPU). Backends are imported lazily so a missing optional dependency only matters when chosen.
"""

from __future__ import annotations

from agentark.engines.base import Completion, Conversation, Engine, Message, SamplingParams

ENGINE_NAMES = ("hf", "openai", "vllm")


def get_engine(kind: str, model: str, **options) -> Engine:
    """Build an engine by name.

    ``options`` go to the backend: ``device``, ``dtype``, ``batch_size`` (hf); ``base_url``,
    ``api_key_env``, ``concurrency``, ``max_retries``, ``timeout_s`` (openai); ``dtype``,
    ``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size`` (vllm).
    """
    if kind == "hf":
        from agentark.engines.hf import HFEngine

        return HFEngine.from_pretrained(model, **options)
    if kind == "openai":
        from agentark.engines.openai import OpenAIEngine

        return OpenAIEngine(model, **options)
    if kind == "vllm":
        from agentark.engines.vllm import VLLMEngine

        return VLLMEngine(model, **options)
    raise ValueError(f"unknown engine {kind!r}; valid engines: {', '.join(ENGINE_NAMES)}")


__all__ = ["ENGINE_NAMES", "Completion", "Conversation", "Engine", "Message", "SamplingParams", "get_engine"]
