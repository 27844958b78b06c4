"""Distillation: multi-agent traces -> training samples -> one fine-tuned student model.

Strategies are looked up by name in :mod:`agentark.distill.registry` (config class, data check,
fingerprint, trainer); each trainer's config sits next to it (sft, prm, grpo = PAD, opd).
"""

from agentark.distill.data import (
    BUILDERS,
    build_answer_only,
    build_da,
    build_rsft,
    build_samples,
    dataset_stats,
    is_target,
    pool_stats,
    to_dataset,
    unsolved_by,
)
from agentark.distill.grpo import PADConfig, make_reward_function, train_pad
from agentark.distill.opd import OPDConfig, train_opd
from agentark.distill.prm import PRMConfig, PRMScorer, train_prm
from agentark.distill.registry import STRATEGIES, STRATEGY_NAMES, Strategy, get_strategy
from agentark.distill.sft import SFTDistillConfig, build_trainer, train_sft
from agentark.distill.steps import build_step_dataset, label_steps, segment_steps
from agentark.distill.training import (
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
    "BUILDERS", "OPDConfig", "PADConfig", "PRMConfig", "PRMScorer", "SFTDistillConfig", "STRATEGIES", "STRATEGY_NAMES",
    "Strategy", "build_answer_only", "build_da", "build_rsft", "build_samples", "build_step_dataset", "build_trainer",
    "clear_manifest", "data_hash", "dataset_stats", "get_strategy", "is_target", "is_up_to_date", "label_steps",
    "lora_config", "loss_curve", "make_reward_function", "pool_stats", "read_manifest",
    "save_student", "segment_steps", "to_dataset", "unsolved_by", "train_opd", "train_pad", "train_prm", "train_sft",
    "training_dtype_device", "write_manifest",
]
