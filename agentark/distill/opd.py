"""On-policy distillation (OPD): the student writes, a teacher grades every token of what it wrote.

RSFT and DA train on a few hundred whole texts, each read once. OPD (generalised knowledge distillation,
Agarwal et al. 2024; Qwen3's strong-to-weak distillation) samples the student's own answer to each
question and minimises a generalised JSD between the student's and the teacher's next-token
distributions on every token of it, so each question gives hundreds of graded decisions and the student
learns from its own mistakes. TRL's ``DistillationTrainer`` does the sampling and the chunked JSD.

Two teachers (``teacher_context``):

* ``model`` -- the teacher model sees exactly what the student sees (the question): classic OPD.
* ``team`` -- the teacher is conditioned on the team's debate for that question: its context holds the
  question plus the agents' final-round answers from the stored traces, the student's only the
  question. The token targets then carry what the team concluded, not only what a bigger model knows
  (MAD-OPD, arXiv 2605.01347, uses a debating collective as the teacher).

MAD-OPD weights one teacher distribution per agent by post-debate agreement. Here the agents' answers
go into one teacher context, grouped by final answer with how many agents reached it (the majority
first): one teacher forward per token instead of one per agent, which on a CPU is the dominant cost,
while the teacher still sees which conclusion the team converged on.

A teacher with another vocabulary would silently misalign the distributions: it is an error. A team
teacher without a trace for a question skips that question (counted in the manifest).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from agentark.config import StageConfig
from agentark.distill.checkpoints import CHECKPOINT_DIR
from agentark.distill.data import question_messages
from agentark.distill.lifecycle import TrainJob, train_job, training_fingerprint
from agentark.distill.training import (
    NO_HOOKS,
    LoraSettings,
    OnPolicySettings,
    TrainHooks,
    device_training_args,
    loss_curve,
    training_dtype_device,
)
from agentark.mas.prompts import team_context
from agentark.models.loading import load_tokenizer, pick_dtype, resolve_model
from agentark.models.packs import DEFAULT_MODEL
from agentark.traces.schema import QuestionTrace
from agentark.traces.store import read_traces

logger = logging.getLogger(__name__)

TeacherContext = Literal["model", "team"]


class OPDConfig(StageConfig, LoraSettings, OnPolicySettings):
    """``agentark distill --strategy opd``: the student samples, the teacher scores every token."""

    operational_fields: ClassVar[frozenset[str]] = frozenset(
        {"out", "force", "traces", "report_to", "logging_steps", "save_steps"})

    traces: str = Field(description="Run directory or traces.jsonl: the questions, and the team's answers for 'team'.")
    model: str = Field(DEFAULT_MODEL, description="Student to start from: pack name, local dir or hub id.")
    teacher: str = Field(
        "qwen2.5-coder-1.5b-instruct", description="Teacher model; must share the student's vocabulary."
    )
    teacher_context: TeacherContext = Field("team", description="model: the teacher sees the question only; "
                                            "team: the question plus the debate's final answers.")
    out: str = "students/opd"
    beta: float = Field(0.5, ge=0.0, le=1.0, description="Generalised JSD: 0 forward KL, 0.5 JSD, 1 reverse KL.")
    learning_rate: float = Field(1e-4, gt=0.0)
    max_steps: int = Field(50, ge=1)
    per_device_train_batch_size: int = Field(4, ge=1, description="Questions (one completion each) per micro-batch.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    save_steps: int = Field(
        10, ge=1, description="Checkpoint every this many steps; a killed run resumes from the last."
    )
    logging_steps: int = Field(1, ge=1)


def opd_rows(traces: Iterable[QuestionTrace], context: TeacherContext) -> tuple[list[dict[str, Any]], int]:
    """One row per question: the student's prompt (the round-0 question) and the teacher's.

    ``team`` rows need the debate's final-round answers; a trace without one is skipped, and the
    number skipped is returned with the rows.
    """
    rows, skipped = [], 0
    for trace in traces:
        prompt = question_messages(trace)
        if context == "model":
            rows.append({"prompt": prompt, "teacher_prompt": prompt, "item_id": trace.item_id})
            continue
        finals = [t for t in trace.final_turns() if t.text.strip()]
        if not finals:
            skipped += 1
            continue
        counts = Counter(t.answer for t in finals)
        # Majority answer first, then by agent: the teacher reads what the team converged on first.
        ordered = sorted(finals, key=lambda t: (-counts[t.answer], t.agent))
        solutions = [(t.text, counts[t.answer], len(finals)) for t in ordered]
        teacher_prompt = [*prompt[:-1], {"role": "user", "content": team_context(prompt[-1]["content"], solutions)}]
        rows.append({"prompt": prompt, "teacher_prompt": teacher_prompt, "item_id": trace.item_id})
    return rows, skipped


def check_vocabularies(student: str, teacher: str, student_vocab: int, teacher_vocab: int) -> None:
    """Token-level distillation compares distributions over one vocabulary: refuse two different ones."""
    if student_vocab != teacher_vocab:
        raise ValueError(f"opd needs one vocabulary: student {student} has {student_vocab} tokens, teacher "
                         f"{teacher} has {teacher_vocab}; pick a teacher of the student's family")


def _trainer_class() -> type:
    """``DistillationTrainer`` whose teacher reads its own prompt (built lazily: TRL loads only to train)."""
    import torch
    from trl import DistillationTrainer

    class TeamDistillationTrainer(DistillationTrainer):
        """The teacher's forward uses each row's ``teacher_prompt`` in place of the student's prompt; the
        completion tokens stay the last ones, so teacher and student positions still align token by token."""

        _teacher_prompt: tuple[Any, Any] | None = None

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            ids, _, _ = self._tokenize_prompts([x["teacher_prompt"] for x in inputs])
            width = max(map(len, ids))
            pad = self._tokenizer.pad_token_id
            device = output["prompt_ids"].device
            output["teacher_prompt_ids"] = torch.tensor(
                [[pad] * (width - len(r)) + list(r) for r in ids], device=device
            )
            output["teacher_prompt_mask"] = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids],
                                                         device=device)
            return output

        def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
            self._teacher_prompt = (inputs["teacher_prompt_ids"], inputs["teacher_prompt_mask"])
            try:
                return super()._compute_loss(unwrapped_student, inputs, num_items_in_batch)
            finally:
                self._teacher_prompt = None

        def _get_last_hidden_state(self, unwrapped_model, input_ids, attention_mask, logits_to_keep, **kwargs):
            if self._teacher_prompt is not None and unwrapped_model is self.accelerator.unwrap_model(
                self.teacher_model
            ):
                prompt_ids, prompt_mask = self._teacher_prompt
                input_ids = torch.cat([prompt_ids, input_ids[:, -logits_to_keep:]], dim=1)
                attention_mask = torch.cat([prompt_mask, attention_mask[:, -logits_to_keep:]], dim=1)
            return super()._get_last_hidden_state(unwrapped_model, input_ids, attention_mask, logits_to_keep, **kwargs)

    return TeamDistillationTrainer


def train_opd(config: OPDConfig, hooks: TrainHooks = NO_HOOKS) -> Path:
    """Distil ``config.teacher`` into ``config.model`` on the traces' questions; returns ``config.out``.

    Checkpoints go to ``out/checkpoints`` every ``save_steps``; a re-run with the same inputs resumes
    from the last one, and a finished student with the same fingerprint is not retrained
    (:func:`~agentark.distill.lifecycle.train_job`).
    """
    rows, skipped = opd_rows(read_traces(config.traces), config.teacher_context)
    if skipped:
        logger.warning("opd: %d questions have no team answers in %s and are skipped", skipped, config.traces)
    if not rows:
        raise ValueError(f"opd: no question to train on in {config.traces}")
    # The teacher is frozen, so it needs no fp32 master weights: the device's fast inference dtype (bf16 on
    # CUDA and on a CPU with native bf16) halves its memory, the larger share of the two models.
    dtype, device = training_dtype_device()
    teacher_dtype = pick_dtype("auto", device)

    def build(callbacks: list[Any]) -> Any:
        import datasets
        from transformers import AutoModelForCausalLM
        from trl import DistillationConfig

        tokenizer = load_tokenizer(config.model)
        student = AutoModelForCausalLM.from_pretrained(resolve_model(config.model), dtype=dtype, use_safetensors=True)
        teacher = AutoModelForCausalLM.from_pretrained(resolve_model(config.teacher), dtype=teacher_dtype,
                                                       use_safetensors=True)
        check_vocabularies(config.model, config.teacher, student.get_output_embeddings().weight.shape[0],
                           teacher.get_output_embeddings().weight.shape[0])
        args = DistillationConfig(
            output_dir=str(Path(config.out) / CHECKPOINT_DIR),
            beta=config.beta,
            learning_rate=config.learning_rate,
            max_steps=config.max_steps,
            per_device_train_batch_size=config.per_device_train_batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            save_strategy="steps",
            save_steps=config.save_steps,
            save_total_limit=1,
            remove_unused_columns=False,  # the teacher's prompt is a column of its own
            logging_steps=config.logging_steps,
            **device_training_args(device, activation_checkpointing=False),
            **config.trl_args(),
        )
        logger.info("opd (%s teacher %s): %d questions, %d steps", config.teacher_context, config.teacher, len(rows),
                    config.max_steps)
        return _trainer_class()(
            model=student, teacher_model=teacher, args=args, train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer, peft_config=config.peft_config(), callbacks=callbacks or None,
        )

    def manifest(trainer: Any, result: Any, resumed_from: str | None) -> dict[str, Any]:
        return {
            "strategy": "opd",
            "base_model": config.model,
            "teacher": config.teacher,
            "teacher_dtype": str(teacher_dtype).removeprefix("torch."),
            "config": config.model_dump(mode="json"),
            "traces": {"source": str(config.traces), "questions": len(rows), "skipped_no_team_answer": skipped},
            "train": {"loss_curve": loss_curve(trainer.state.log_history), "global_step": trainer.state.global_step,
                      "resumed_from": resumed_from, "metrics": result.metrics},
        }

    fingerprint = training_fingerprint(config, rows, strategy="opd")
    return train_job(TrainJob(Path(config.out), fingerprint, build, manifest, force=config.force), hooks)
