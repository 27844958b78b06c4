"""Distillation: multi-agent traces -> training samples -> one fine-tuned student model."""

from agentark.distill.data import (
    BUILDERS,
    build_answer_only,
    build_da,
    build_rsft,
    build_samples,
    dataset_stats,
    is_target,
    pool_stats,
    unsolved_by,
    to_dataset,
)
from agentark.distill.grpo import PADConfig, make_reward_function, train_pad
from agentark.distill.prm import PRMConfig, PRMScorer, train_prm
from agentark.distill.sft import SFTDistillConfig, build_trainer, train_sft
from agentark.distill.steps import build_step_dataset, label_steps, mc_label_steps, segment_steps
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
    "PADConfig", "PRMConfig", "PRMScorer", "build_step_dataset", "label_steps", "make_reward_function",
    "mc_label_steps", "segment_steps", "train_pad", "train_prm",
    "BUILDERS", "SFTDistillConfig", "build_answer_only", "build_da", "build_rsft", "build_samples",
    "build_trainer", "canonical_hash", "clear_manifest", "data_hash", "dataset_stats", "is_target", "is_up_to_date",
    "pool_stats", "unsolved_by", "lora_config", "loss_curve", "read_manifest", "save_student", "to_dataset", "train_sft",
    "training_dtype_device", "write_manifest",
]
