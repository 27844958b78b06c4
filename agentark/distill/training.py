"""Plumbing every distillation trainer shares (SFT, PAD's PRM and GRPO, OPD).

A trained student is a directory that loads like any Hugging Face model (merged safetensors +
tokenizer), with the LoRA adapter kept in ``adapter/`` and a ``manifest.json`` that records what
made it. The manifest is written last, so its presence means the directory is complete, and its
``fingerprint`` lets a re-run with identical inputs return at once instead of retraining (the order
of it all: :mod:`agentark.distill.lifecycle`).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import constants
from pydantic import BaseModel, Field, model_validator

from agentark.config import stable_hash
from agentark.models.adapters import ADAPTER_DIR
from agentark.models.hardware import cpu_info
from agentark.traces.store import write_json_atomic

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"

Progress = Callable[[int, int], None]
"""``progress(step, total_steps)``, called after every optimiser step (e.g. to drive a rich bar)."""

Precision = Literal["auto", "fp32", "bf16"]
"""Training arithmetic: ``auto`` is bf16 where it is native (CUDA, AMX / AVX512-BF16), else fp32."""


@dataclass(frozen=True)
class TrainHooks:
    """What a trainer's caller may watch: every optimiser step, and every checkpoint once it is on disk
    (the experiment runner keeps each one in git the moment it is written, so a killed training resumes
    in another checkout)."""

    progress: Progress | None = None
    on_checkpoint: Callable[[Path], None] | None = None

    def callbacks(self) -> list[Any]:
        """transformers ``TrainerCallback`` objects for these hooks (none when nothing is watched)."""
        from transformers import TrainerCallback

        hooks = self

        class _Hooks(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if hooks.progress:
                    hooks.progress(state.global_step, state.max_steps)

            def on_save(self, args, state, control, **kwargs):
                if hooks.on_checkpoint and state.is_world_process_zero:
                    hooks.on_checkpoint(Path(args.output_dir) / f"checkpoint-{state.global_step}")

        return [_Hooks()] if self.progress or self.on_checkpoint else []


NO_HOOKS = TrainHooks()
"""Nothing watched: the default of every trainer's ``hooks``."""


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (Linux reports KiB), for every manifest."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules: str | list[str] = "all-linear"):
    """A causal-LM LoRA config; ``all-linear`` adapts every linear layer except the output head."""
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none", task_type="CAUSAL_LM"
    )


LORA_LEARNING_RATE = 2e-4
FULL_LEARNING_RATE = 1e-5
"""Default rates: adapters want a far larger step than full fine-tuning of every weight."""


class LoraSettings(BaseModel):
    """The LoRA fields every trainer config shares (SFT, PRM, PAD, OPD); in each config's hash."""

    use_lora: bool = Field(True, description="LoRA adapters (cheap; merged into the saved model) or full fine-tuning.")
    lora_r: int = Field(16, ge=1, description="Adapter rank.")
    lora_alpha: int = Field(32, ge=1, description="Adapter scale numerator (scale = lora_alpha / lora_r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _default_learning_rate(self):
        """A config with ``learning_rate: None`` gets the rate for its kind of training, resolved now so
        the fingerprint and the manifest hold the value actually used."""
        if "learning_rate" in type(self).model_fields and self.learning_rate is None:
            self.learning_rate = LORA_LEARNING_RATE if self.use_lora else FULL_LEARNING_RATE
        return self

    def peft_config(self):
        """peft's causal-LM ``LoraConfig`` from these fields, or ``None`` for full fine-tuning."""
        return lora_config(self.lora_r, self.lora_alpha, self.lora_dropout) if self.use_lora else None


class OnPolicySettings(BaseModel):
    """What the on-policy trainers (PAD's GRPO, OPD) share: the student samples its own answers."""

    temperature: float = Field(
        1.0, gt=0.0, description="The student's sampling temperature (and OPD's loss temperature)."
    )
    max_completion_length: int = Field(256, ge=1, description="Tokens the student writes per question.")
    seed: int = 0
    report_to: str = "none"
    force: bool = Field(False, description="Retrain even when the output is up to date.")

    def trl_args(self) -> dict[str, Any]:
        """The TRL config arguments these fields set, alike in GRPOConfig and DistillationConfig."""
        return {"max_completion_length": self.max_completion_length, "temperature": self.temperature,
                "report_to": self.report_to, "seed": self.seed, "data_seed": self.seed}


def data_hash(samples: Sequence[Mapping[str, Any]]) -> str:
    """Identity of a training set, order included (order is part of what the trainer sees)."""
    return stable_hash(list(samples))


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a finished student, or ``None`` when there is none (or it is unreadable)."""
    path = Path(out_dir) / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        logger.warning("%s is not valid JSON; treating %s as not trained", path, out_dir)
        return None


def write_manifest(out_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write the manifest atomically; call it last, once the weights are saved."""
    path = Path(out_dir) / MANIFEST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, dict(manifest))
    return path


def clear_manifest(out_dir: str | Path) -> None:
    """Mark ``out_dir`` as unfinished before overwriting it, so a crash mid-way never looks done."""
    (Path(out_dir) / MANIFEST_FILE).unlink(missing_ok=True)


def is_up_to_date(out_dir: str | Path, fingerprint: str) -> bool:
    """True when ``out_dir`` holds a finished student made from exactly these inputs."""
    manifest = read_manifest(out_dir)
    return manifest is not None and manifest.get("fingerprint") == fingerprint


def save_student(model: Any, tokenizer: Any, out_dir: str | Path, merge: bool = True) -> Path:
    """Save a trained model so ``--model out_dir`` loads it like any HF model directory.

    A PEFT model's adapter goes to ``out_dir/adapter`` (small, reusable on the base model, publishable
    with ``agentark export``); with
    ``merge`` the adapter is also folded into the base weights and the full model saved to
    ``out_dir`` (the adapter-only form needs peft at load time, the merged one does not). A plain
    (fully fine-tuned) model is saved to ``out_dir`` as is, and a stale adapter from an earlier LoRA
    run there is removed. The tokenizer always goes to ``out_dir``. Merging modifies ``model`` in
    place; call this once training is over.
    """
    from peft import PeftModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(out_dir / ADAPTER_DIR)
        if merge:
            model.merge_and_unload().save_pretrained(out_dir, safe_serialization=True)
    else:
        shutil.rmtree(out_dir / ADAPTER_DIR, ignore_errors=True)
        model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def training_dtype_device() -> tuple[Any, str]:
    """Weights in bf16 on CUDA (fast, no loss scaling); fp32 on CPU, where the master weights stay fp32 and
    the matmuls run in bf16 autocast only on a CPU with native bf16 (:func:`device_training_args`)."""
    import torch

    if not torch.cuda.is_available():
        return torch.float32, "cpu"
    _no_hub_kernels_offline()
    return torch.bfloat16, "cuda"


def _no_hub_kernels_offline() -> None:
    """On CUDA, transformers swaps Hub kernels into a model it loads (``kernels-community/rotary`` for
    Qwen2's rotary embedding) and fetches them at the first training step; with the Hub offline that fetch
    fails mid-run (seen on an H200 with ``HF_HUB_OFFLINE=1``). Offline and with no choice made, train on
    transformers' own torch paths instead; ``USE_HUB_KERNELS`` set by the user always wins."""
    if constants.HF_HUB_OFFLINE and "USE_HUB_KERNELS" not in os.environ:
        os.environ["USE_HUB_KERNELS"] = "NO"
        logger.info("Hub offline: transformers' Hub kernels are off for training (set USE_HUB_KERNELS to choose)")


def loss_curve(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """``(step, loss)`` points from a Trainer's ``state.log_history`` (the final summary row excluded)."""
    return [{"step": row["step"], "loss": row["loss"]} for row in log_history if "loss" in row and "step" in row]


def resolve_precision(precision: Precision, device: str) -> Literal["fp32", "bf16"]:
    """``auto`` -> what is fast here; an explicit choice (e.g. the one a kept checkpoint was trained in) stays."""
    if precision != "auto":
        return precision
    return "bf16" if device == "cuda" or cpu_info().fast_bf16 else "fp32"


def training_resources(metrics: Mapping[str, Any], steps_run: int, precision: str) -> dict[str, Any]:
    """The cost figures every manifest records: peak RSS, seconds per optimiser step, CPU, precision."""
    runtime = float(metrics.get("train_runtime", 0.0))
    return {
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "s_per_step": round(runtime / steps_run, 2) if steps_run else None,
        "steps_run": steps_run,
        "cpu": cpu_info().model,
        "precision": precision,
    }


def device_training_args(device: str, activation_checkpointing: bool, precision: Precision = "auto") -> dict[str, Any]:
    """Trainer arguments that depend on the device, shared by the SFT and GRPO configs.

    ``bf16`` is mixed precision: on CUDA over bf16 weights, on CPU as bf16 autocast over fp32 weights, and
    there only where the CPU has native bf16 (AMX / AVX512-BF16: 2.8x faster per LoRA step than fp32,
    ``bench/training_dtype.py``); on an AVX2-only CPU bf16 is emulated and slower, so it stays fp32. TRL
    defaults ``bf16`` to True even there, and the deprecated alias ``gradient_checkpointing`` to True; the
    new name ``activation_checkpointing`` overrides it.
    """
    return {
        "bf16": resolve_precision(precision, device) == "bf16",
        "activation_checkpointing": activation_checkpointing,
        "use_cpu": device == "cpu",
        "dataloader_pin_memory": device == "cuda",
    }
