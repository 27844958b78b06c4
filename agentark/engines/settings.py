"""Typed settings of every engine: one pydantic model per backend, chosen by the engine's name.

``--engine-option key=value``, a YAML ``engine_options:`` section and ``get_engine(kind, model,
**options)`` are all validated here before any model loads, so a typo is one line naming the option
and the valid ones, not a TypeError deep in a backend. Each model also says which of its options
change the text produced (:meth:`EngineSettings.identity`): those enter a run's hash, the others
(how many sequences decode together, threads, timeouts) do not, so a run resumes after them changing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from agentark.defaults import DEFAULT_BATCH_SIZE
from agentark.errors import one_line_error
from agentark.models.hardware import cpu_info

_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

Dtype = Annotated[Literal["auto", "float32", "bfloat16", "float16"],
                  BeforeValidator(lambda v: _DTYPE_ALIASES.get(v, v) if isinstance(v, str) else v)]
"""A weights dtype; the short spellings (fp32, bf16, fp16) are stored under their long names, so
``dtype=bf16`` and ``dtype=bfloat16`` give the same run hash (they give the same text)."""


class EngineSettings(BaseModel):
    """What every engine's settings share: strict field names and the identity/operational split."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    """The engine these settings are for (a ``Literal`` per engine): the discriminator when settings of
    several engines share one field."""
    batch_field: ClassVar[str | None] = None
    """The option that says how many sequences decode together (a stage's batch size fills it)."""
    operational_fields: ClassVar[frozenset[str]] = frozenset()
    """Options that change speed or where the work runs, never the text produced."""

    def identity(self) -> dict[str, Any]:
        """The output-changing options set away from their defaults.

        Defaults stay out on purpose: a run made before an option existed, or with every default,
        keeps its hash when a field is added later, so a long run still resumes after an upgrade.
        ``kind`` stays out too: the run's config names the engine already.
        """
        return self.model_dump(mode="json", exclude={"kind", *self.operational_fields}, exclude_defaults=True)


class LlamaCppSettings(EngineSettings):
    """``llamacpp``: GGUF files on CPU through llama.cpp's server engine (:mod:`agentark.engines.llamacpp`)."""

    kind: Literal["llamacpp"] = "llamacpp"
    batch_field: ClassVar[str | None] = "n_parallel"
    # n_ctx_per_seq is operational: a request that does not fit its slot fails (the error says to
    # raise it) rather than being cut short, so raising it and resuming never changes a stored text.
    # prompt_cache is operational too: it decides which prompt tokens are prefilled, not what is written.
    operational_fields: ClassVar[frozenset[str]] = frozenset({"n_parallel", "n_threads", "n_ctx_per_seq",
                                                              "prompt_cache"})

    n_parallel: int = Field(32, ge=1, description="Slots decoded together (continuous batching). More slots use "
                            "the CPU better until memory bandwidth is the limit; each slot costs n_ctx_per_seq "
                            "tokens of KV cache, allocated up front, so lower it when memory is short.")
    n_ctx_per_seq: int = Field(2048, ge=64, description="Tokens of context per slot (prompt + answer). Raise it "
                               "for long debates, whose later rounds carry the other agents' answers, when "
                               "requests fail with an exceeded-context error.")
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: every core). Lower it to leave "
                                  "cores to another process sharing the machine.")
    outtype: Literal["f32", "f16", "bf16", "q8_0"] | None = Field(
        None, description="GGUF type that HF weights are converted to (default f16). A pack runs in its own "
        "quantisation unless this is set: set it (e.g. f16) so that a base pack and its f16 students compare "
        "like for like. Changes the numbers, so it is in the run hash.")
    prompt_cache: bool = Field(True, description="Reuse the KV cache of a prompt's prefix that a slot already "
                               "holds, and send each conversation's next turn to the slot that served its last one "
                               "(a debate's later rounds then prefill only what is new). Turn it off to prefill "
                               "every prompt in full, e.g. to check that reuse changed no text.")


class HFSettings(EngineSettings):
    """``hf``: transformers on CPU or CUDA with agentark's own batched decode loop (:mod:`agentark.engines.hf`)."""

    kind: Literal["hf"] = "hf"
    batch_field: ClassVar[str | None] = "batch_size"
    # prompt_cache is operational: it decides which prompt tokens are prefilled, not what is written; like
    # batch_size it moves logits in the last bits only (exact greedy texts in float32 on the tests' model).
    operational_fields: ClassVar[frozenset[str]] = frozenset({"batch_size", "device", "prompt_cache"})

    device: str = Field("auto", description="auto (CUDA if present, else CPU), cpu, cuda or cuda:N. Set it to "
                        "pin a run to one GPU or to keep it off a busy one.")
    dtype: Dtype = Field("auto", description="Weights' dtype: auto (bf16 on CUDA and on CPUs with AMX / "
                         "AVX512-BF16, float32 elsewhere, where bf16 is emulated and slower), float32 (fp32), "
                         "bfloat16 (bf16), float16 (fp16). Set it to compare engines at one precision; it "
                         "changes the numbers, so it is in the run hash.")
    batch_size: int = Field(
        DEFAULT_BATCH_SIZE,
        ge=1,
        description="Sequences per forward pass. Larger is faster until memory "
        "runs out; lower it on an out-of-memory error.",
    )
    prompt_cache: bool = Field(True, description="Keep the KV cache of every sequence generated (least recently "
                               "used dropped past 1 GiB) and prefill only what a later prompt adds to the longest "
                               "one it starts with, token for token (a debate's later rounds then skip the "
                               "question and the agent's own answer). Turn it off to prefill every prompt in full, "
                               "e.g. to check that reuse changed no text.")


class OpenAISettings(EngineSettings):
    """``openai``: any OpenAI-compatible chat-completions server (:mod:`agentark.engines.openai`)."""

    kind: Literal["openai"] = "openai"
    operational_fields: ClassVar[frozenset[str]] = frozenset(
        {"api_key_env", "concurrency", "max_retries", "timeout_s", "retry_base_s"})

    base_url: str | None = Field(None, description="Server URL, e.g. http://127.0.0.1:8000/v1 for a local vLLM or "
                                 "llama.cpp server (default: OpenAI's API). A different server may serve "
                                 "different weights, so it is in the run hash.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Name of the environment variable holding the API "
                             "key (the key itself never goes into a config); change it to keep keys of "
                             "several providers apart.")
    concurrency: int = Field(16, ge=1, description="Requests in flight. Raise it for a server that batches "
                             "(vLLM, llama.cpp with many slots); lower it when a provider rate-limits.")
    max_retries: int = Field(5, ge=0, description="Retries of a failed request (429, 5xx, timeouts) with "
                             "exponential backoff; raise it for a flaky or rate-limited provider.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds one request may take; raise it for long answers "
                             "from a slow server.")
    retry_base_s: float = Field(0.5, gt=0, description="First backoff delay in seconds; it doubles per retry "
                                "(capped at 60 s). Raise it when a provider's rate limit resets slowly.")


class VLLMSettings(EngineSettings):
    """``vllm``: an in-process ``vllm.LLM`` on GPU (:mod:`agentark.engines.vllm`)."""

    kind: Literal["vllm"] = "vllm"
    operational_fields: ClassVar[frozenset[str]] = frozenset({"gpu_memory_utilization", "tensor_parallel_size",
                                                              "enable_prefix_caching"})

    dtype: Dtype = Field("auto", description="Weights' dtype (auto: the checkpoint's own). Set it to match "
                         "another engine's precision; it changes the numbers, so it is in the run hash.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory vLLM may take "
                                          "(weights + KV cache); lower it when something else shares the GPU.")
    max_model_len: int | None = Field(None, ge=1, description="Context length in tokens (default: the model's). "
                                      "Lower it to fit the KV cache on a small GPU; answers that reach it are "
                                      "cut short, so it is in the run hash.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split over; raise it for a model "
                                      "too large for one GPU.")
    enable_prefix_caching: bool = Field(True, description="vLLM's automatic prefix caching: a prompt's prefix "
                                        "already in the KV cache (a debate agent's question and earlier answer) is "
                                        "not prefilled again. Turn it off to measure without it.")


ENGINE_NAMES = ("auto", "llamacpp", "hf", "openai", "vllm")


def resolve_engine_kind(kind: str) -> str:
    """``auto`` -> the concrete engine for this machine; any other valid name unchanged."""
    if kind not in ENGINE_NAMES:
        raise ValueError(f"unknown engine {kind!r}; valid engines: {', '.join(ENGINE_NAMES)}")
    if kind != "auto":
        return kind
    import torch  # lazy: the llamacpp and openai engines run without torch (1-3 s to import)

    if torch.cuda.is_available():
        return "vllm" if importlib.util.find_spec("vllm") else "hf"
    if cpu_info().fast_bf16:
        return "hf"
    return "llamacpp" if importlib.util.find_spec("xllamacpp") else "hf"


ENGINE_SETTINGS: dict[str, type[EngineSettings]] = {
    cls.model_fields["kind"].default: cls for cls in (LlamaCppSettings, HFSettings, OpenAISettings, VLLMSettings)}
"""Each concrete engine's settings class, by engine name."""


def engine_settings(kind: str, options: Mapping[str, Any] | None = None) -> EngineSettings:
    """The validated settings of engine ``kind`` (``auto`` resolved for this machine).

    Raises a one-line ``ValueError`` naming the engine, the option and the valid options or values.
    """
    kind = resolve_engine_kind(kind)
    cls = ENGINE_SETTINGS[kind]
    try:
        return cls.model_validate({"kind": kind, **(options or {})})
    except ValidationError as e:
        raise ValueError(one_line_error(f"engine {kind}: ", e, cls)) from None
