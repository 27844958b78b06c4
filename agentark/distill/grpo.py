"""Process-aware distillation (PAD): GRPO on the training questions, rewarded by the debate's PRM.

The student samples ``num_generations`` solutions per question; each is rewarded with

    reward = aggregate(PRM P(right) per step) + correctness_coef * [answer graded right against gold]

The PRM part (trained on the debate's step labels, :mod:`agentark.distill.prm`) carries the debate's
*process* signal and varies between solutions even when none is right -- a correctness-only reward
gives a weak student all-zero rewards, hence zero GRPO advantages and no gradient. ``min``
aggregation (default) makes a solution only as good as its worst step.

TRL's ``GRPOTrainer`` does the RL; it passes every extra dataset column to reward functions as a
keyword argument (one value per completion), which is how each completion's ``gold`` reaches
:class:`PADReward`.

``credit="dense"`` keeps the same PRM and verifiable reward but gives each token the min-form
return-to-go of its own step instead of one number per solution (:mod:`agentark.distill.credit`),
through a ``GRPOTrainer`` subclass that replaces the per-solution advantages with per-token ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from agentark.config import StageConfig
from agentark.distill.checkpoints import CHECKPOINT_DIR
from agentark.distill.credit import group_advantages, step_spans, token_returns, token_steps
from agentark.distill.data import question_messages
from agentark.distill.lifecycle import TrainJob, train_job, training_fingerprint
from agentark.distill.prm import PRMConfig, PRMScorer, as_traces, train_prm
from agentark.distill.steps import prompt_text, segment_steps
from agentark.distill.training import (
    NO_HOOKS,
    LoraSettings,
    OnPolicySettings,
    TrainHooks,
    device_training_args,
    read_manifest,
    training_dtype_device,
)
from agentark.models.loading import load_tokenizer, resolve_model
from agentark.models.packs import DEFAULT_MODEL
from agentark.tasks import Task, get_task
from agentark.traces.schema import QuestionTrace

logger = logging.getLogger(__name__)

Aggregation = Literal["min", "mean", "last"]
Credit = Literal["scalar", "dense"]


class PADConfig(StageConfig, LoraSettings, OnPolicySettings):
    """``agentark distill --strategy pad``: a PRM (``prm``), then GRPO.

    ``prm`` defaults to a PRM on the student's own weights in ``<out>/prm`` with this run's ``seed``
    and ``force``; fields given in ``prm`` override those defaults.
    """

    # The PRM enters the fingerprint through its own fingerprint, not through these settings.
    operational_fields: ClassVar[frozenset[str]] = frozenset(
        {"out", "force", "prm", "activation_checkpointing", "report_to"})

    model: str = Field(DEFAULT_MODEL, description="Student to start from: pack name, local dir or hub id.")
    out: str = "students/pad"
    prm: PRMConfig
    num_generations: int = Field(4, ge=2, description="GRPO group size (completions per question).")
    prompts_per_step: int = Field(2, ge=1, description="Questions per optimizer step.")
    beta: float = Field(0.04, ge=0, description="KL coefficient against the initial policy (0 = no reference model).")
    epsilon: float = Field(0.2, gt=0, description="PPO-style clip range of the policy ratio.")
    learning_rate: float = Field(1e-5, gt=0)
    max_prompt_length: int = Field(512, ge=1, description="Questions whose chat prompt is longer are left out.")
    max_steps: int = Field(100, ge=1)
    aggregation: Aggregation = Field("min", description="scalar credit: how step scores become one reward.")
    credit: Credit = Field("scalar", description="scalar: one reward per solution; dense: each step's min-form "
                           "return-to-go on its own tokens plus the verifiable reward (PURE).")
    min_form_temperature: float = Field(0.1, gt=0, description="dense credit: T of the softmax(-r/T) step weights.")
    correctness_coef: float = 1.0
    activation_checkpointing: bool = Field(False, description="Recompute activations: less memory, slower.")

    @model_validator(mode="before")
    @classmethod
    def _default_prm(cls, data: Any) -> Any:
        if isinstance(data, dict) and not isinstance(data.get("prm"), PRMConfig):
            defaults = {"out": str(Path(data.get("out", "students/pad")) / "prm"), "seed": data.get("seed", 0),
                        "force": data.get("force", False)}
            if "model" in data:
                defaults["model"] = data["model"]
            data = {**data, "prm": {**defaults, **(data.get("prm") or {})}}
        return data


def aggregate(step_scores: Sequence[float], how: Aggregation | str = "min") -> float:
    """One number from the PRM's step scores; NaN (unscored) steps are ignored and a solution with no
    scored step gets 0.0, the worst possible P(right)."""
    scores = [s for s in step_scores if not math.isnan(s)]
    if not scores:
        return 0.0
    if how == "min":
        return min(scores)
    if how == "mean":
        return sum(scores) / len(scores)
    if how == "last":
        return scores[-1]
    raise ValueError(f"unknown aggregation {how!r}; use min, mean or last")


def _text(message_or_text: Any) -> str:
    """Completion text in both TRL formats: a string, or a list of chat messages (last one's content)."""
    return message_or_text if isinstance(message_or_text, str) else message_or_text[-1]["content"]


def _prompt(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else prompt_text(prompt)


@dataclass(frozen=True)
class ScoredBatch:
    """What the reward saw of the last batch, per completion: its text, PRM step scores, correctness."""

    texts: list[str]
    step_scores: list[list[float]]
    outcome: list[float]


class PADReward:
    """TRL reward function: PRM aggregate + ``correctness_coef`` x verifiable correctness.

    A callable object (TRL names it by its class) so TRL can log it as ``rewards/PADReward``; the
    two parts are also logged separately through TRL's ``log_metric`` hook when given.
    """

    def __init__(self, scorer: Any, task: Task, aggregation: Aggregation | str = "min", correctness_coef: float = 1.0):
        aggregate([], aggregation)  # fail now on a bad name, not mid-training
        self.scorer = scorer
        self.task = task
        self.aggregation = aggregation
        self.correctness_coef = correctness_coef
        self.last: ScoredBatch | None = None

    def correct(self, text: str, gold: str) -> float:
        task = self.task
        return float(task.grade(task.normalize(task.extract(text).flexible), gold))

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], gold: Sequence[str],
                 log_metric: Callable[[str, float], None] | None = None, **_: Any) -> list[float]:
        texts = [_text(c) for c in completions]
        step_scores = self.scorer.score([_prompt(p) for p in prompts], texts)
        process = [aggregate(s, self.aggregation) for s in step_scores]
        outcome = [self.correct(t, g) for t, g in zip(texts, gold, strict=True)]
        self.last = ScoredBatch(texts, step_scores, outcome)
        if log_metric is not None and texts:
            log_metric("pad/prm", sum(process) / len(process))
            log_metric("pad/correct", sum(outcome) / len(outcome))
        return [p + self.correctness_coef * o for p, o in zip(process, outcome, strict=True)]


def make_reward_function(scorer: Any, task: Task, aggregation: Aggregation | str = "min",
                         correctness_coef: float = 1.0) -> PADReward:
    """The PAD reward for ``GRPOTrainer(reward_funcs=[...])``; ``scorer`` needs ``score(prompts, completions)``
    returning P(right) per step (:class:`~agentark.distill.prm.PRMScorer`)."""
    return PADReward(scorer, task, aggregation, correctness_coef)


def dense_token_advantages(tokenizer: Any, completion_ids: Sequence[Sequence[int]], batch: ScoredBatch,
                           step_mode: str, group_size: int, temperature: float,
                           outcome_coef: float) -> tuple[list[list[float]], int]:
    """Per-token advantages of a generated batch from the reward's step scores; also the number of
    solutions whose steps could not be placed on their tokens (they get their whole-solution return
    on every token, i.e. scalar credit)."""
    returns, unplaced = [], 0
    for ids, text, scores, outcome in zip(completion_ids, batch.texts, batch.step_scores, batch.outcome, strict=True):
        ids = list(ids)
        prefixes = [tokenizer.decode(ids[: i + 1], skip_special_tokens=True) for i in range(len(ids))]
        try:
            spans = step_spans(prefixes[-1] if prefixes else "", segment_steps(text, step_mode))
            steps = token_steps([len(p) for p in prefixes], spans)
        except ValueError:
            unplaced += 1
            steps = [0] * len(ids)
        returns.append(token_returns(scores, steps, outcome, temperature, outcome_coef) or [outcome_coef * outcome])
    return group_advantages(returns, group_size), unplaced


def _dense_trainer_class() -> type:
    """``GRPOTrainer`` with per-token advantages (built lazily: TRL is imported only when training)."""
    import torch
    from trl import GRPOTrainer

    class DenseCreditGRPOTrainer(GRPOTrainer):
        """Replaces GRPO's per-solution advantage with each token's step return (TRL >= 1.16 accepts
        advantages of shape (batch, tokens) from subclasses)."""

        def __init__(self, *args: Any, min_form_temperature: float, **kwargs: Any):
            super().__init__(*args, **kwargs)
            (self.pad_reward,) = self.reward_funcs  # the PADReward: it keeps the step scores of the last batch
            self.min_form_temperature = min_form_temperature

        def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
            output = super()._generate_and_score_completions(inputs)
            batch = self.pad_reward.last
            ids, mask = output["completion_ids"], output["completion_mask"]
            if batch is None or len(batch.texts) != len(ids):
                raise RuntimeError("dense credit: the reward did not score this batch (one process expected)")
            rows = [row[: int(m.sum())].tolist() for row, m in zip(ids, mask, strict=True)]
            mode = getattr(self.pad_reward.scorer, "step_mode", "auto")
            advantages, unplaced = dense_token_advantages(
                self.processing_class, rows, batch, mode, self.num_generations, self.min_form_temperature,
                self.pad_reward.correctness_coef)
            dense = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
            for i, row in enumerate(advantages):
                dense[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
            output["advantages"] = dense
            self._metrics["train"]["pad/unplaced_steps"].append(unplaced / len(rows))
            return output

    return DenseCreditGRPOTrainer


def grpo_rows(traces: Iterable[QuestionTrace], tokenizer: Any, max_prompt_length: int) -> list[dict]:
    """One GRPO row per question: the round-0 question conversation and its gold answer.

    TRL 1.16 has no ``max_prompt_length``; a question whose chat prompt is longer is left out (and
    counted in the log) rather than cut, since a cut question is a different question.
    """
    rows, too_long = [], 0
    for trace in traces:
        prompt = question_messages(trace)
        n_tokens = len(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                                     return_dict=True)["input_ids"])
        if n_tokens > max_prompt_length:
            too_long += 1
            continue
        rows.append({"prompt": prompt, "gold": trace.gold, "item_id": trace.item_id})
    if too_long:
        logger.warning("PAD: left out %d questions longer than max_prompt_length=%d tokens", too_long,
                       max_prompt_length)
    return rows


def reward_summary(log_history: Sequence[dict]) -> dict[str, float | int | None]:
    """First / last / mean logged batch reward: the reward curve in three numbers."""
    rewards = [entry["reward"] for entry in log_history if "reward" in entry]
    if not rewards:
        return {"first": None, "last": None, "mean": None, "n_logged": 0}
    return {"first": rewards[0], "last": rewards[-1], "mean": sum(rewards) / len(rewards), "n_logged": len(rewards)}


def train_pad(config: PADConfig, traces: Iterable[QuestionTrace] | str | Path, task: Task | None = None,
              hooks: TrainHooks = NO_HOOKS) -> Path:
    """PRM (cached) then GRPO with the PAD reward; saves the merged student + manifest in ``config.out``.

    ``traces``: trace records, or a run directory / traces.jsonl to read them from.
    ``task`` grades the verifiable part of the reward; by default the traces' task by name
    (``agentark.tasks.get_task``). A second call with unchanged config, PRM and questions is a no-op
    unless ``config.force`` (:func:`~agentark.distill.lifecycle.train_job`); ``hooks`` watch the PRM's
    training, then GRPO's.
    """
    traces = as_traces(traces)
    task = task or get_task(traces[0].task)
    prm_dir = train_prm(config.prm, traces, hooks)
    prm_manifest = read_manifest(prm_dir) or {}

    tokenizer = load_tokenizer(config.model)
    rows = grpo_rows(traces, tokenizer, config.max_prompt_length)
    if not rows:
        raise ValueError(f"every question is longer than max_prompt_length={config.max_prompt_length}")

    def build(callbacks: list[Any]) -> Any:
        import datasets
        from transformers import AutoModelForCausalLM
        from trl import GRPOConfig, GRPOTrainer

        dtype, device = training_dtype_device()
        scorer = PRMScorer(prm_dir, device=device, batch_size=config.prm.score_batch_size)
        model = AutoModelForCausalLM.from_pretrained(resolve_model(config.model), dtype=dtype,
                                                     use_safetensors=True).to(device)
        args = GRPOConfig(
            output_dir=str(Path(config.out) / CHECKPOINT_DIR),  # nothing is written there (save_strategy="no")
            num_generations=config.num_generations,
            per_device_train_batch_size=config.num_generations * config.prompts_per_step,
            beta=config.beta,
            epsilon=config.epsilon,
            learning_rate=config.learning_rate,
            max_steps=config.max_steps,
            logging_steps=1,
            save_strategy="no",
            **device_training_args(device, config.activation_checkpointing),
            **config.trl_args(),
        )
        if config.credit == "dense":
            trainer_class, extra = _dense_trainer_class(), {"min_form_temperature": config.min_form_temperature}
        else:
            trainer_class, extra = GRPOTrainer, {}
        logger.info("PAD (%s credit): GRPO on %d questions, %d steps x %d questions x %d generations", config.credit,
                    len(rows), config.max_steps, config.prompts_per_step, config.num_generations)
        return trainer_class(
            model=model,
            reward_funcs=[make_reward_function(scorer, task, config.aggregation, config.correctness_coef)],
            args=args,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=config.peft_config(),
            callbacks=callbacks or None,
            **extra,
        )

    def manifest(trainer: Any, result: Any, resumed_from: str | None) -> dict[str, Any]:
        rewards = reward_summary(trainer.state.log_history)
        logger.info("PAD reward: first %s, last %s, mean %s", rewards["first"], rewards["last"], rewards["mean"])
        return {
            "strategy": "pad",
            "base_model": config.model,
            "config": config.model_dump(mode="json"),
            "prm": {"path": str(prm_dir), "fingerprint": prm_manifest.get("fingerprint"),
                    "held_out": prm_manifest.get("held_out")},
            "n_questions": len(rows),
            "reward": rewards,
            "log_history": [e for e in trainer.state.log_history if "reward" in e or "loss" in e],
        }

    # What decides the student's weights: settings (base model included), the PRM, the questions.
    fingerprint = training_fingerprint(config, rows, strategy="pad", prm=prm_manifest.get("fingerprint", ""))
    return train_job(TrainJob(Path(config.out), fingerprint, build, manifest, force=config.force), hooks)
