"""vLLM engine (optional, GPU): the fast path for generating debate traces at scale.

``LLM.chat`` applies the model's chat template and schedules the whole list of conversations with
continuous batching, so one ``generate`` call is one vLLM call.
"""

from __future__ import annotations

import time

from agentark.engines.base import Completion, Conversation, SamplingParams
from agentark.models import resolve_model

# The dtype spellings the rest of agentark accepts, in vLLM's vocabulary.
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class VLLMEngine:
    """Generate with an in-process ``vllm.LLM``."""

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
    ):
        """``enable_prefix_caching``: vLLM keeps finished prompts' KV blocks and reuses any prefix a new
        prompt shares with them, so a debate's later rounds prefill only what each agent has not seen."""
        try:
            import vllm
        except ImportError as exc:
            raise ImportError("the vllm engine needs vLLM: pip install 'agentark[vllm]' (vllm 0.22-0.31, the range "
                              "TRL supports; on a CPU the llamacpp engine needs nothing more)") from exc
        self.model_id = model
        self.llm = vllm.LLM(
            model=resolve_model(model),
            dtype=_DTYPES.get(dtype, dtype),
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
        )

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        from vllm import SamplingParams as VLLMSamplingParams

        if not conversations:
            return []
        # vLLM seeds each request, so one seed for all would give identical conversations (every
        # agent's first turn, self-consistency samples) identical answers; offset it per position.
        params = [
            VLLMSamplingParams(
                n=1,
                temperature=max(sampling.temperature, 0.0),  # 0 is greedy in vLLM
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                seed=None if sampling.seed is None else sampling.seed + i,
                ignore_eos=sampling.ignore_eos,
                stop=list(sampling.stop) or None,
            )
            for i in range(len(conversations))
        ]
        start = time.perf_counter()
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        latency = time.perf_counter() - start
        return [
            Completion(
                text=out.outputs[0].text,
                prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(out.outputs[0].token_ids),
                latency_s=latency,
                finish_reason=out.outputs[0].finish_reason or "stop",
                cached_prompt_tokens=out.num_cached_tokens or 0,  # None when vLLM did not count them
            )
            for out in outputs
        ]
