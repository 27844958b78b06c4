"""Distillation: multi-agent traces -> training samples -> one fine-tuned student model."""

from agentark.distill.data import (
    BUILDERS,
    build_answer_only,
    build_da,
    build_dataset,
    build_rsft,
    build_samples,
    dataset_stats,
    to_dataset,
)
from agentark.distill.sft import SFTDistillConfig, build_trainer, train_sft
from agentark.distill.training import (
    canonical_hash,
    clear_manifest,
    data_hash,
    is_up_to_date,
    lora_config,
    loss_curve,
    read_manifest,
    save_student,
    training_dtype_device,
    write_manifest,
)

__all__ = [
    "BUILDERS", "SFTDistillConfig", "build_answer_only", "build_da", "build_dataset", "build_rsft", "build_samples",
    "build_trainer", "canonical_hash", "clear_manifest", "data_hash", "dataset_stats", "is_up_to_date",
    "lora_config", "loss_curve", "read_manifest", "save_student", "to_dataset", "train_sft",
    "training_dtype_device", "write_manifest",
]
