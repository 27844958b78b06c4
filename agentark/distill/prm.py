"""Process reward model (PRM): P(step is right) for every step of a solution, trained on debate traces.

Why ``transformers.Trainer`` + ``AutoModelForTokenClassification`` and not TRL: TRL removed its
``PRMTrainer`` in 1.14. Pinning ``trl<1.14`` would hold the whole project (SFT, GRPO) on an old TRL,
while a PRM is only token classification with a sparse label, which ``transformers`` does natively.
The data format and tokenisation follow TRL's PRM exactly, so nothing is lost:

* rows are TRL stepwise supervision (``prompt``, ``completions`` = steps, ``labels`` = bools), from
  :func:`agentark.distill.steps.build_step_dataset`;
* input = prompt + separator, then each step followed by the separator (``"\\n"``), each step
  tokenised on its own; the label (0/1) sits on the separator token that ends each step and is -100
  everywhere else. The score of a step is read at the same token.

Training has two stages (AgentArk's PAD recipe): stage I trains only the new classification head and
the last transformer block, so the random head settles before it can disturb the backbone; stage II
trains everything (or LoRA adapters + head with ``use_lora``). An optional contrastive term
(InfoNCE, temperature ``tau``) pushes each positive step's score above the negative steps that
*other agents* wrote for the same question -- which is why a training batch holds whole questions.

:class:`PRMScorer` scores any (prompt, completion) pairs with the same
:func:`~agentark.distill.steps.segment_steps` and :func:`encode_steps` as training used.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from pydantic import Field

from agentark.config import StageConfig
from agentark.distill.checkpoints import CHECKPOINT_DIR
from agentark.distill.lifecycle import TrainJob, train_job, training_fingerprint
from agentark.distill.steps import STEP_SEPARATOR, RoundsSel, StepMode, build_step_dataset, segment_steps
from agentark.distill.training import (
    NO_HOOKS,
    LoraSettings,
    TrainHooks,
    device_training_args,
    loss_curve,
    read_manifest,
    training_dtype_device,
)
from agentark.models.loading import load_tokenizer, pick_device, pick_dtype, resolve_model
from agentark.models.packs import DEFAULT_MODEL
from agentark.traces.schema import QuestionTrace
from agentark.traces.store import read_traces

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
PRM_LABELS = {0: "wrong", 1: "right"}


class PRMConfig(StageConfig, LoraSettings):
    """How to train a PRM. ``model`` is the base weights; PAD defaults it to the student's own."""

    operational_fields: ClassVar[frozenset[str]] = frozenset({"out", "force", "score_batch_size"})

    model: str = Field(DEFAULT_MODEL, description="Base weights: pack name, local dir or hub id.")
    out: str = "students/prm"
    step_mode: StepMode = "auto"
    rounds: RoundsSel = Field("all", description="Label every round's solver turns, or only the final round's.")
    stage1_epochs: float = Field(1.0, ge=0, description="Stage I (head + last block only); 0 skips it.")
    stage1_learning_rate: float = Field(1e-4, gt=0)
    epochs: float = Field(1.0, ge=0, description="Stage II (everything, or LoRA + head); 0 skips it.")
    learning_rate: float | None = Field(None, gt=0, description="Stage II; default 2e-4 with LoRA, 1e-5 without.")
    max_steps: int = Field(-1, description="Cap on optimizer steps per stage (-1 = run the epochs).")
    batch_size: int = Field(4, ge=1, description="Questions per batch; each brings all its agents' solutions.")
    score_batch_size: int = Field(16, ge=1, description="Solutions per forward pass when scoring.")
    max_length: int = Field(1024, ge=8)
    use_lora: bool = False  # the PRM fine-tunes every weight unless told otherwise
    contrastive: bool = False
    tau: float = Field(0.1, gt=0)
    contrastive_weight: float = 1.0
    held_out_fraction: float = Field(0.2, ge=0, lt=1)
    seed: int = 0
    force: bool = False


# --------------------------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class EncodedSteps:
    """Token ids of one (prompt, steps) pair, with the position of each step's end token.

    ``step_ends[i]`` is ``None`` when step ``i`` was cut off by ``max_length``: it gets no label in
    training and a NaN score.
    """

    input_ids: list[int]
    step_ends: list[int | None]

    def labels(self, step_labels: Sequence[bool]) -> list[int]:
        """Token labels: -100 everywhere except 0/1 on each kept step's end token."""
        out = [IGNORE_INDEX] * len(self.input_ids)
        for end, label in zip(self.step_ends, step_labels, strict=True):
            if end is not None:
                out[end] = int(label)
        return out


def encode_steps(tokenizer: Any, prompt: str, steps: Sequence[str], max_length: int) -> EncodedSteps:
    """TRL-PRM tokenisation: [bos] prompt+sep, then per step its own ids + the separator's ids.

    Too long: the prompt is cut from the left first (the steps are what is scored), then the steps
    from the right.
    """
    sep = tokenizer(STEP_SEPARATOR, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompt_ids = tokenizer(prompt + STEP_SEPARATOR, add_special_tokens=False)["input_ids"]
    chunks = [tokenizer(step, add_special_tokens=False)["input_ids"] + sep for step in steps]
    completion_len = sum(len(c) for c in chunks)
    keep = max(0, max_length - len(bos) - completion_len)
    ids = bos + (prompt_ids[-keep:] if keep else [])
    ends: list[int | None] = []
    for chunk in chunks:
        ids += chunk
        ends.append(len(ids) - 1 if len(ids) <= max_length else None)
    return EncodedSteps(ids[:max_length], ends)


def _pad(sequences: Sequence[Sequence[int]], value: int) -> Any:
    import torch

    width = max(len(s) for s in sequences)
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in sequences], dtype=torch.long)


def step_log_odds(logits: Any) -> Any:
    """Score of a step as log P(right) - log P(wrong); sigmoid of it is P(right)."""
    return logits[..., 1].float() - logits[..., 0].float()


# --------------------------------------------------------------------------------------------- scoring


class PRMScorer:
    """P(right) of every step of a batch of solutions, with the training-time segmentation.

    ``model`` is a PRM directory (from :func:`train_prm`; its manifest supplies ``step_mode`` and
    ``max_length`` unless given) or an already loaded token-classification model plus ``tokenizer``.
    """

    def __init__(self, model: str | Path | Any, tokenizer: Any | None = None, step_mode: StepMode | None = None,
                 batch_size: int = 16, max_length: int | None = None, device: str = "auto"):
        if isinstance(model, (str, Path)):
            from transformers import AutoModelForTokenClassification

            manifest = read_manifest(Path(model)) or {}
            step_mode = step_mode or manifest.get("step_mode")
            max_length = max_length or manifest.get("max_length")
            device = pick_device(device)
            tokenizer = tokenizer or load_tokenizer(str(model))
            model = AutoModelForTokenClassification.from_pretrained(
                str(model), dtype=pick_dtype("auto", device), use_safetensors=True).to(device)
        if tokenizer is None:
            raise ValueError("PRMScorer needs the tokenizer when given a loaded model")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.step_mode: str = step_mode or "auto"
        self.batch_size = batch_size
        self.max_length = max_length or 1024

    def score_steps(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """P(right) per given step (NaN for steps cut off by ``max_length``).

        All solutions go through in padded chunks of ``batch_size``, sorted by length so a chunk
        pads little, and come back in the caller's order.
        """
        import torch

        encoded = [encode_steps(self.tokenizer, p, s, self.max_length) for p, s in zip(prompts, steps, strict=True)]
        scores: list[list[float]] = [[] for _ in encoded]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        pad_id = self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            chunk = [i for i in order[start : start + self.batch_size] if encoded[i].input_ids]
            if not chunk:
                continue
            ids = _pad([encoded[i].input_ids for i in chunk], pad_id).to(device)
            mask = _pad([[1] * len(encoded[i].input_ids) for i in chunk], 0).to(device)
            with torch.inference_mode():
                probs = torch.sigmoid(step_log_odds(self.model(input_ids=ids, attention_mask=mask).logits)).cpu()
            for row, i in enumerate(chunk):
                scores[i] = [math.nan if end is None else float(probs[row, end]) for end in encoded[i].step_ends]
        return scores

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[list[float]]:
        """P(right) per step of each completion, cut with :func:`segment_steps` in this PRM's mode."""
        return self.score_steps(prompts, [segment_steps(c, self.step_mode) for c in completions])


# --------------------------------------------------------------------------------------------- metrics


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (scikit-learn), ``None`` when only one class is present (undefined)."""
    from sklearn.metrics import roc_auc_score

    if len(set(map(bool, labels))) < 2:
        return None
    return float(roc_auc_score([bool(y) for y in labels], list(scores)))


def step_metrics(scorer: PRMScorer, rows: Sequence[dict]) -> dict[str, Any]:
    """Step-level AUROC and accuracy (P(right) >= 0.5) of ``scorer`` on labelled stepwise rows."""
    if not rows:
        return {"auroc": None, "accuracy": None, "n_steps": 0}
    scored = scorer.score_steps([r["prompt"] for r in rows], [r["completions"] for r in rows])
    pairs = [
        (s, y)
        for row, scores in zip(rows, scored, strict=True)
        for s, y in zip(scores, row["labels"], strict=True)
        if not math.isnan(s)
    ]
    if not pairs:
        return {"auroc": None, "accuracy": None, "n_steps": 0}
    scores, labels = [s for s, _ in pairs], [y for _, y in pairs]
    return {"auroc": auroc(scores, labels), "accuracy": sum((s >= 0.5) == y for s, y in pairs) / len(pairs),
            "n_steps": len(pairs), "positive_share": sum(labels) / len(labels)}


def split_by_item(rows: Sequence[dict], held_out_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded train / held-out split by question, so no question's steps are on both sides.

    With at least two questions and a fraction > 0, at least one question is held out and one kept.
    """
    ids = sorted({r["item_id"] for r in rows})
    random.Random(seed).shuffle(ids)
    n_held = 0
    if held_out_fraction > 0 and len(ids) >= 2:
        n_held = min(len(ids) - 1, max(1, round(held_out_fraction * len(ids))))
    held = set(ids[:n_held])
    return [r for r in rows if r["item_id"] not in held], [r for r in rows if r["item_id"] in held]


# --------------------------------------------------------------------------------------------- training


def info_nce(scores: Any, labels: Any, groups: Any, rows: Any, tau: float) -> Any:
    """InfoNCE over step scores: each positive step against the negative steps of *other* solutions
    (other agents / rounds) of the same question in the batch.

    ``scores``, ``labels``, ``groups`` (question index), ``rows`` (solution index): 1-D, one entry
    per labelled step. Positives without any such negative do not contribute; no anchor -> 0.
    """
    import torch

    s = scores / tau
    negatives = (groups[:, None] == groups[None, :]) & (rows[:, None] != rows[None, :]) & (labels[None, :] == 0)
    anchors = (labels == 1) & negatives.any(dim=1)
    if not anchors.any():
        return scores.sum() * 0.0
    neg_logits = s[None, :].expand(len(s), -1).masked_fill(~negatives, float("-inf"))
    log_denominator = torch.logsumexp(torch.cat([s[:, None], neg_logits], dim=1), dim=1)
    return (log_denominator - s)[anchors].mean()


def _question_rows(rows: Sequence[dict], tokenizer: Any, max_length: int) -> list[dict]:
    """One training example per question: all its solutions' token ids and token labels."""
    by_item: dict[str, dict[str, list]] = {}
    for row in rows:
        enc = encode_steps(tokenizer, row["prompt"], row["completions"], max_length)
        entry = by_item.setdefault(row["item_id"], {"input_ids": [], "labels": []})
        entry["input_ids"].append(enc.input_ids)
        entry["labels"].append(enc.labels(row["labels"]))
    return list(by_item.values())


class QuestionCollator:
    """Flattens a batch of questions into one right-padded batch of solutions, plus ``group`` (which
    question each solution belongs to) for the contrastive term."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, questions: list[dict]) -> dict[str, Any]:
        import torch

        ids = [seq for q in questions for seq in q["input_ids"]]
        labels = [seq for q in questions for seq in q["labels"]]
        groups = [g for g, q in enumerate(questions) for _ in q["input_ids"]]
        return {"input_ids": _pad(ids, self.pad_token_id), "attention_mask": _pad([[1] * len(s) for s in ids], 0),
                "labels": _pad(labels, IGNORE_INDEX), "group": torch.tensor(groups, dtype=torch.long)}


def _make_trainer_class() -> type:
    """The Trainer subclass, built lazily so importing this module does not import transformers."""
    import torch.nn.functional as F
    from transformers import Trainer

    class PRMTrainer(Trainer):
        """Cross-entropy on step-end tokens, plus ``contrastive_weight`` x :func:`info_nce`."""

        loss_is_scaled_for_ga = False  # a per-batch mean; the Trainer divides by accumulation steps

        def __init__(self, *args: Any, contrastive_weight: float = 0.0, tau: float = 0.1, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.contrastive_weight = contrastive_weight
            self.tau = tau

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            groups = inputs.pop("group")
            outputs = model(**inputs)
            at_steps = labels != IGNORE_INDEX
            step_logits = outputs.logits[at_steps].float()
            step_labels = labels[at_steps]
            loss = F.cross_entropy(step_logits, step_labels) if at_steps.any() else outputs.logits.sum() * 0.0
            if self.contrastive_weight:
                rows = at_steps.nonzero()[:, 0]
                loss = loss + self.contrastive_weight * info_nce(
                    step_log_odds(step_logits), step_labels, groups[rows], rows, self.tau)
            return (loss, outputs) if return_outputs else loss

    return PRMTrainer


def _backbone_blocks(model: Any) -> Any:
    """The transformer blocks: the longest ``nn.ModuleList`` inside the backbone."""
    from torch import nn

    lists = [m for m in getattr(model, model.base_model_prefix).modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError(f"cannot find the transformer blocks of {type(model).__name__}")
    return max(lists, key=len)


def _freeze_for_stage1(model: Any) -> int:
    """Stage I: only the head (everything outside the backbone) and the last block train."""
    prefix = model.base_model_prefix + "."
    for name, param in model.named_parameters():
        param.requires_grad = not name.startswith(prefix)
    for param in _backbone_blocks(model)[-1].parameters():
        param.requires_grad = True
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class TwoStageTrainer:
    """Stage I (head + last block), then stage II (everything, or LoRA adapters + head), as one trainer
    to the lifecycle (:func:`~agentark.distill.lifecycle.train_job`): ``train``, ``model``,
    ``processing_class``, ``state``. Nothing is checkpointed: a PRM trains in minutes."""

    def __init__(self, model: Any, tokenizer: Any, dataset: Any, config: PRMConfig, device: str,
                 callbacks: list[Any]):
        self.model, self.processing_class = model, tokenizer
        self.dataset, self.config, self.device, self.callbacks = dataset, config, device, callbacks
        self.collator = QuestionCollator(tokenizer.pad_token_id)
        self.state = SimpleNamespace(global_step=0, log_history=[])

    def train(self, resume_from_checkpoint: str | None = None) -> Any:
        from transformers.trainer_utils import TrainOutput

        config, runtime, losses = self.config, 0.0, []
        if config.stage1_epochs > 0:
            logger.info("PRM stage I: %d trainable parameters (head + last block)", _freeze_for_stage1(self.model))
            runtime += self._stage("stage1", config.stage1_epochs, config.stage1_learning_rate, losses)
        if config.epochs > 0:
            self.model.requires_grad_(True)
            if config.use_lora:
                from peft import get_peft_model

                model = self.model
                head = [name for name, module in model.named_children()
                        if name != model.base_model_prefix and any(True for _ in module.parameters())]
                lora = config.peft_config()
                # The head is a linear layer too: train it fully (modules_to_save), never through an adapter.
                lora.task_type, lora.exclude_modules, lora.modules_to_save = "TOKEN_CLS", head, head
                self.model = get_peft_model(model, lora)
            runtime += self._stage("stage2", config.epochs, config.learning_rate, losses)
        mean_loss = sum(losses) / len(losses) if losses else 0.0
        return TrainOutput(self.state.global_step, mean_loss, {"train_runtime": runtime})

    def _stage(self, name: str, epochs: float, learning_rate: float, losses: list[float]) -> float:
        from transformers import TrainingArguments

        config = self.config
        args = TrainingArguments(
            output_dir=str(Path(config.out) / CHECKPOINT_DIR),  # nothing is written there (save_strategy="no")
            num_train_epochs=epochs,
            max_steps=config.max_steps,
            learning_rate=learning_rate,
            per_device_train_batch_size=config.batch_size,
            lr_scheduler_type="cosine",
            warmup_steps=0,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            remove_unused_columns=False,
            **device_training_args(self.device, activation_checkpointing=False),
            seed=config.seed,
            data_seed=config.seed,
        )
        trainer = _make_trainer_class()(
            model=self.model, args=args, train_dataset=self.dataset, data_collator=self.collator,
            callbacks=self.callbacks or None,
            contrastive_weight=config.contrastive_weight if config.contrastive else 0.0, tau=config.tau)
        result = trainer.train()
        self.state.global_step += trainer.state.global_step
        self.state.log_history += [{"stage": name, **point} for point in loss_curve(trainer.state.log_history)]
        losses.append(result.training_loss)
        return float(result.metrics.get("train_runtime", 0.0))


def as_traces(traces: Iterable[QuestionTrace] | str | Path) -> list[QuestionTrace]:
    """Trace records as given, or read from a run directory / traces.jsonl."""
    traces = list(read_traces(traces) if isinstance(traces, (str, Path)) else traces)
    if not traces:
        raise ValueError("no traces to learn from")
    return traces


def train_prm(config: PRMConfig, traces: Iterable[QuestionTrace] | str | Path, hooks: TrainHooks = NO_HOOKS) -> Path:
    """Train (or reuse) a PRM on debate traces (records, or a run directory); returns its directory.

    Saves the model (HF format, safetensors), its tokenizer and a manifest with the held-out
    step-level AUROC / accuracy. A second call with the same config and data is a no-op unless
    ``config.force`` (:func:`~agentark.distill.lifecycle.train_job`).
    """
    out_dir = Path(config.out)
    rows = build_step_dataset(as_traces(traces), config.step_mode, config.rounds)
    if not rows:
        raise ValueError("no labelled steps in these traces (is any question answered right by some agent?)")
    train_rows, held_rows = split_by_item(rows, config.held_out_fraction, config.seed)

    def build(callbacks: list[Any]) -> TwoStageTrainer:
        import datasets
        import torch
        from transformers import AutoModelForTokenClassification

        dtype, device = training_dtype_device()
        torch.manual_seed(config.seed)
        tokenizer = load_tokenizer(config.model)
        model = AutoModelForTokenClassification.from_pretrained(
            resolve_model(config.model), num_labels=2, id2label=PRM_LABELS,
            label2id={v: k for k, v in PRM_LABELS.items()}, dtype=dtype, use_safetensors=True).to(device)
        dataset = datasets.Dataset.from_list(_question_rows(train_rows, tokenizer, config.max_length))
        logger.info("PRM: %d solutions (%d questions) to train on, %d held out", len(train_rows), len(dataset),
                    len(held_rows))
        return TwoStageTrainer(model, tokenizer, dataset, config, device, callbacks)

    def manifest(trainer: TwoStageTrainer, result: Any, resumed_from: str | None) -> dict[str, Any]:
        n_steps = sum(len(r["labels"]) for r in train_rows)
        # Held-out metrics of the PRM as saved (reloaded), i.e. of exactly what PAD will score with.
        scorer = PRMScorer(out_dir, step_mode=config.step_mode, batch_size=config.score_batch_size,
                           max_length=config.max_length)
        metrics = step_metrics(scorer, held_rows)
        logger.info("PRM held-out step AUROC %s, accuracy %s over %d steps", metrics["auroc"], metrics["accuracy"],
                    metrics["n_steps"])
        return {
            "kind": "prm",
            "base_model": config.model,
            "step_mode": config.step_mode,
            "step_separator": STEP_SEPARATOR,
            "max_length": config.max_length,
            "config": config.model_dump(mode="json"),
            "n_solutions": {"train": len(train_rows), "held_out": len(held_rows)},
            "held_out": metrics,
            "train_steps": {"n": n_steps,
                            "positive_share": sum(sum(r["labels"]) for r in train_rows) / max(1, n_steps)},
            "log_history": trainer.state.log_history,
        }

    fingerprint = training_fingerprint(config, rows, kind="prm")
    return train_job(TrainJob(out_dir, fingerprint, build, manifest, force=config.force), hooks)
