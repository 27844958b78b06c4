"""Supervised distillation: debate traces -> (RSFT | DA | answer-only) samples -> TRL ``SFTTrainer``.

The data are TRL conversational prompt-completion records, so TRL renders them with the model's own
chat template and puts the loss on the completion tokens only (prompt tokens get label -100); no
``{% generation %}`` assistant-mask template is needed. LoRA by default (cheap, and the adapter is
kept next to the merged model); ``use_lora=False`` fine-tunes every weight.

Re-running with the same traces and settings is a no-op: the output's manifest fingerprint covers the
training data and every setting that changes the weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from agentark.config import StageConfig, world_size
from agentark.distill.checkpoints import CHECKPOINT_DIR
from agentark.distill.data import Sample, build_samples, dataset_stats, pool_stats, subsample, to_dataset, unsolved_by
from agentark.distill.lifecycle import TrainJob, train_job, training_fingerprint
from agentark.distill.training import (
    NO_HOOKS,
    LoraSettings,
    Precision,
    TrainHooks,
    data_hash,
    device_training_args,
    loss_curve,
    training_dtype_device,
)
from agentark.models.loading import load_tokenizer, resolve_model
from agentark.models.packs import DEFAULT_MODEL
from agentark.traces.schema import QuestionTrace
from agentark.traces.store import read_traces

logger = logging.getLogger(__name__)


class SFTDistillConfig(StageConfig, LoraSettings):
    """``agentark distill --strategy rsft|da|sft``: settings of one supervised distillation run."""

    # Not part of the fingerprint: where things go, re-run policy, logging, and the traces path (the
    # data hash already covers the trace content, so a moved run directory does not force retraining).
    operational_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "out",
            "force",
            "traces",
            "student_run",
            "report_to",
            "logging_steps",
            "activation_checkpointing",
            "save_steps",
            "precision",
        }
    )

    hashed_when_set: ClassVar[frozenset[str]] = frozenset({"source_round", "max_samples", "subsample_seed"})

    strategy: Literal["rsft", "da", "sft"] = "rsft"
    traces: str = Field(description="Run directory or traces.jsonl of the multi-agent run to distil.")
    model: str = Field(DEFAULT_MODEL, description="Student to start from: pack name, local dir or hub id.")
    out: str = "students/student"
    student_run: str | None = Field(
        None, description="A run of the student alone on the same train questions (agentark generate --system "
        "single): questions it answered right are left out, so training holds only what it must learn from the team.")
    per_question: Literal["one", "all"] = Field("one", description="rsft: one trajectory per question, or all correct.")
    source_round: Literal["final", "first"] = Field(
        "final", description="rsft: targets from the debate's final round (the team) or from round 0 only (each agent "
        "alone before it saw a peer: the teacher model by itself, the control for what the debate adds).")
    max_samples: int | None = Field(
        None, ge=1, description="Keep at most this many samples, drawn with subsample_seed (match two sets' sizes).")
    subsample_seed: int = Field(0, description="Seed of the max_samples draw (the training seed is `seed`).")
    k: int = Field(3, ge=1, le=3, description="da: trajectories per question.")
    learning_rate: float | None = Field(None, gt=0.0, description="Default: 2e-4 with LoRA, 1e-5 without.")
    num_train_epochs: float = Field(2.0, gt=0.0)
    max_steps: int = Field(-1, description="If > 0, stop after this many optimiser steps (overrides epochs).")
    per_device_train_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(2, ge=1)
    effective_batch_size: int | None = Field(
        None, ge=1, description="Samples per optimiser step over all processes; when set, the accumulation steps "
        "follow from it and the world size (accelerate launch), so 1 or N processes train alike.")
    save_steps: int = Field(0, ge=0, description="Checkpoint every this many steps under <out>/checkpoints (0: "
                            "none); a re-run with the same inputs resumes from the last one.")
    max_length: int = Field(512, ge=16, description="Tokens per sample (prompt + completion); longer ones are cut.")
    train_sampling_strategy: Literal["group_by_length", "random"] = Field(
        "group_by_length", description="Batch order: group_by_length draws batches of similar length (traces vary "
        "several-fold in length, so random batches carry much padding), random shuffles freely (TRL's default).")
    seed: int = 0
    activation_checkpointing: bool = Field(False, description="Recompute activations: less memory, ~20% slower.")
    precision: Precision = Field("auto", description="Training arithmetic: auto (bf16 where native: CUDA, AMX / "
                                 "AVX512-BF16; else fp32), fp32 or bf16 (autocast over fp32 master weights on CPU). A "
                                 "resumed training keeps the precision its checkpoints were made in.")
    report_to: str = "none"
    logging_steps: int = Field(5, ge=1)
    force: bool = False

    def builder_options(self) -> dict[str, Any]:
        """The options of this strategy's sample builder (the others' options do not apply)."""
        return {"rsft": {"per_question": self.per_question, "source_round": self.source_round}, "da": {"k": self.k},
                "sft": {}}[self.strategy]

    def samples(self, traces: list[QuestionTrace]) -> list[Sample]:
        """This config's training set from ``traces``: the strategy's builder, then the size cap."""
        return subsample(build_samples(self.strategy, traces, **self.builder_options()), self.max_samples,
                         self.subsample_seed)


def training_traces(config: SFTDistillConfig) -> list[QuestionTrace]:
    """The traces the builder chooses from: all of them, or those the student alone got wrong."""
    traces = list(read_traces(config.traces))
    if config.student_run is None:
        return traces
    kept = unsolved_by(traces, read_traces(config.student_run))
    logger.info("student_run: %d of %d questions are unsolved by the student alone", len(kept), len(traces))
    return kept


def fingerprint(config: SFTDistillConfig, samples: list[Sample]) -> str:
    """What decides the student's weights: the training data, the settings, the starting model."""
    return training_fingerprint(config, samples, base_model=config.model)


def accumulation_steps(config: SFTDistillConfig, processes: int) -> int:
    """Gradient accumulation that keeps ``effective_batch_size`` on ``processes`` processes."""
    if config.effective_batch_size is None:
        return config.gradient_accumulation_steps
    per_step = config.per_device_train_batch_size * processes
    if config.effective_batch_size % per_step:
        raise ValueError(
            f"effective_batch_size={config.effective_batch_size} is not a multiple of "
            f"per_device_train_batch_size x processes = {config.per_device_train_batch_size} x {processes}"
        )
    return config.effective_batch_size // per_step


def build_trainer(config: SFTDistillConfig, dataset: Any, tokenizer: Any, callbacks: Sequence[Any] = ()):
    """The TRL ``SFTTrainer`` for ``config`` on ``dataset``, ready to ``train()``.

    Separate from :func:`train_sft` so tests can inspect exactly the batches training would see.
    """
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    # SFTTrainer wraps the model in LoRA before Trainer.__init__ seeds, so seed here for a
    # reproducible adapter initialisation.
    set_seed(config.seed)
    dtype, device = training_dtype_device()
    model = AutoModelForCausalLM.from_pretrained(resolve_model(config.model), dtype=dtype, use_safetensors=True)
    args = SFTConfig(
        output_dir=str(Path(config.out) / CHECKPOINT_DIR),
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=accumulation_steps(config, world_size()),
        max_length=config.max_length,
        train_sampling_strategy=config.train_sampling_strategy,
        completion_only_loss=True,
        seed=config.seed,
        **device_training_args(device, config.activation_checkpointing, config.precision),
        logging_steps=config.logging_steps,
        logging_first_step=True,  # a loss point even for runs shorter than logging_steps
        report_to=config.report_to,
    )
    peft_config = config.peft_config()
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks) or None,
    )


def check_cut_samples(train_dataset: Any, n_samples: int, max_length: int) -> None:
    """TRL cuts samples to ``max_length`` silently: say how many lost their end or were dropped whole."""
    lengths = [len(ids) for ids in train_dataset["input_ids"]]
    if not lengths:
        raise ValueError(f"max_length={max_length} leaves no completion token in any sample; raise max_length")
    dropped = n_samples - len(lengths)
    cut = sum(n >= max_length for n in lengths)
    if dropped or cut:
        logger.warning("max_length=%d: %d of %d samples cut short (the student never sees their end), %d dropped "
                       "(prompt alone fills max_length); consider a larger max_length", max_length, cut, n_samples,
                       dropped)


def train_sft(config: SFTDistillConfig, hooks: TrainHooks = NO_HOOKS) -> Path:
    """Distil ``config.traces`` into a student at ``config.out``; returns that directory.

    If ``out`` already holds a student with the same fingerprint (and not ``force``) nothing is
    trained (:func:`~agentark.distill.lifecycle.train_job`).
    """
    traces = training_traces(config)
    samples = config.samples(traces)
    stats: dict[str, Any] = {}

    def build(callbacks: list[Any]) -> Any:
        tokenizer = load_tokenizer(config.model)
        stats.update(dataset_stats(samples, tokenizer))
        logger.info("distilling %s: %d samples from %d of %d questions (%.0f%% corrective)", config.strategy,
                    stats["samples"], stats["questions"], len(traces), 100 * stats["corrective_share"])
        return build_trainer(config, to_dataset(samples), tokenizer, callbacks)

    def manifest(trainer: Any, result: Any, resumed_from: str | None) -> dict[str, Any]:
        return {
            "strategy": config.strategy,
            "data_hash": data_hash(samples),
            "traces": {"source": str(config.traces), "questions": len(traces), "student_run": config.student_run},
            "pool": pool_stats(traces),
            "base_model": config.model,
            "config": config.model_dump(),
            "dataset": stats,
            "train": {"loss_curve": loss_curve(trainer.state.log_history), "metrics": result.metrics,
                      "global_step": trainer.state.global_step, "resumed_from": resumed_from,
                      "processes": world_size(),
                      "effective_batch_size": config.per_device_train_batch_size * world_size()
                      * accumulation_steps(config, world_size())},
        }

    return train_job(TrainJob(
        Path(config.out), fingerprint(config, samples), build, manifest, force=config.force,
        precision=config.precision,
        before_train=lambda trainer: check_cut_samples(trainer.train_dataset, len(samples), config.max_length),
    ), hooks)
