"""Typed settings of every engine: one pydantic model per backend, chosen by the engine's name.

``--engine-option key=value`` and a YAML ``engine_options:`` section are validated here before any
model loads, so a typo is one line naming the option and the valid ones, not a TypeError deep in a
backend. Each model also says which of its options change the text produced (``identity``): those
enter a run's hash, the others (how many sequences decode together, threads, timeouts) do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentark.errors import one_line_error

Dtype = Literal["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"]


class EngineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ClassVar[str]
    batch_field: ClassVar[str | None] = None
    """The option that says how many sequences decode together (a stage's batch size fills it)."""
    operational_fields: ClassVar[frozenset[str]] = frozenset()
    """Options that change speed or where the work runs, never the text produced."""

    def identity(self) -> dict[str, Any]:
        """The output-changing options set away from their defaults: defaults stay out, so a run made
        before an option existed keeps its hash."""
        return self.model_dump(exclude=set(self.operational_fields), exclude_defaults=True)


class LlamaCppSettings(EngineSettings):
    kind: ClassVar[str] = "llamacpp"
    batch_field: ClassVar[str | None] = "n_parallel"
    operational_fields: ClassVar[frozenset[str]] = frozenset({"n_parallel", "n_threads", "n_ctx_per_seq"})

    n_parallel: int = Field(32, ge=1, description="Slots decoded together (continuous batching).")
    n_ctx_per_seq: int = Field(2048, ge=64, description="Tokens per slot (prompt + answer); raise it for long "
                               "debates, whose later rounds carry the other agents' answers.")
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: llama.cpp's choice).")
    outtype: Literal["f32", "f16", "bf16", "q8_0"] | None = Field(
        None, description="GGUF type HF weights are converted to (f16 by default); a pack runs in its own "
        "quantisation unless this is set, so that a base pack and its f16 students compare like for like.")


class HFSettings(EngineSettings):
    kind: ClassVar[str] = "hf"
    batch_field: ClassVar[str | None] = "batch_size"
    operational_fields: ClassVar[frozenset[str]] = frozenset({"batch_size", "device"})

    device: str = Field("auto", description="auto (CUDA if present), cpu, cuda, cuda:N.")
    dtype: Dtype = Field("auto", description="auto: bf16 on CUDA and on CPUs with AMX / AVX512-BF16, fp32 "
                         "elsewhere (bf16 is slower there). Changes the numbers, so it is in the hash.")
    batch_size: int = Field(32, ge=1, description="Sequences per forward pass.")


class OpenAISettings(EngineSettings):
    kind: ClassVar[str] = "openai"
    operational_fields: ClassVar[frozenset[str]] = frozenset(
        {"api_key_env", "concurrency", "max_retries", "timeout_s", "retry_base_s"})

    base_url: str | None = Field(None, description="Server, e.g. http://127.0.0.1:8000/v1 (default: OpenAI's).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the key.")
    concurrency: int = Field(16, ge=1, description="Requests in flight.")
    max_retries: int = Field(5, ge=0, description="Retries of a failed request (exponential backoff).")
    timeout_s: float = Field(120.0, gt=0, description="Seconds per request.")
    retry_base_s: float = Field(0.5, gt=0, description="First backoff delay.")


class VLLMSettings(EngineSettings):
    kind: ClassVar[str] = "vllm"
    operational_fields: ClassVar[frozenset[str]] = frozenset({"gpu_memory_utilization", "tensor_parallel_size"})

    dtype: Dtype = Field("auto", description="Weights' dtype (auto: the checkpoint's).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    max_model_len: int | None = Field(None, ge=1, description="Context length (default: the model's).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split over.")


ENGINE_SETTINGS: dict[str, type[EngineSettings]] = {
    cls.kind: cls for cls in (LlamaCppSettings, HFSettings, OpenAISettings, VLLMSettings)}


def engine_settings(kind: str, options: Mapping[str, Any] | None = None) -> EngineSettings:
    """The validated settings of engine ``kind`` (``auto`` resolved); one-line ``ValueError`` otherwise."""
    from agentark.engines import resolve_engine_kind

    kind = resolve_engine_kind(kind)
    cls = ENGINE_SETTINGS[kind]
    try:
        return cls.model_validate(dict(options or {}))
    except ValidationError as e:
        raise ValueError(one_line_error(f"engine {kind}: ", e, cls)) from None
