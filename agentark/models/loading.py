"""Resolve a model name (pack short name, local path or HF hub id) and load it.

Every command that takes ``--model`` goes through :func:`resolve_model` so pack names, local
directories (e.g. a distilled student) and hub ids are interchangeable.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agentark.models.adapters import adapter_base, is_adapter_dir, merged_adapter
from agentark.models.hardware import cpu_info
from agentark.models.packs import MODEL_PACKS, materialize_pack

logger = logging.getLogger(__name__)


def resolve_model(name: str) -> str:
    """Pack short name -> its cached safetensors dir; a published adapter dir -> its base with the adapter
    merged (cached, :mod:`agentark.models.adapters`); a local dir or ``org/name`` hub id unchanged."""
    if name in MODEL_PACKS:
        return str(materialize_pack(name))
    if is_adapter_dir(name):
        return str(merged_adapter(name, resolve_model(adapter_base(name))))
    if Path(name).exists() or (name.count("/") == 1 and not name.startswith((".", "/"))):
        return name
    raise ValueError(
        f"unknown model {name!r}: not a model pack ({', '.join(MODEL_PACKS)}), "
        "not a local directory, and not a hub id of the form org/name"
    )


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str = "auto", device: str = "cpu") -> Any:
    """``auto`` is bf16 on CUDA and on a CPU with native bf16 (AVX512-BF16 or AMX), fp32 on other CPUs.

    Inference only: on an AVX2-only CPU bf16 is emulated and slower than fp32, so it is never the
    default there (:mod:`agentark.models.hardware`). Training keeps fp32 weights on CPU and autocasts
    (``agentark.distill.training.device_training_args``).
    """
    import torch

    if dtype == "auto":
        fast_bf16 = device.startswith("cuda") or (device == "cpu" and cpu_info().fast_bf16)
        return torch.bfloat16 if fast_bf16 else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def load_tokenizer(name: str, padding_side: str = "left"):
    """Tokenizer with a pad token; left padding because batched generation appends on the right."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(f"model {name!r} has no chat template; AgentArk agents talk in chat messages")
    return tokenizer


def load_model(name: str, device: str = "auto", dtype: str = "auto"):
    """Load a causal LM for inference (eval mode) on ``device`` from safetensors."""
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    path = resolve_model(name)
    if not Path(path).exists():
        logger.info("loading %s from the Hugging Face hub", path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, device), use_safetensors=True)
    return model.to(device).eval()
