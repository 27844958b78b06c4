"""A model card (``README.md``) for a published adapter, in the form a Hub user recognises.

The YAML metadata block (``base_model``, ``library_name: peft``, tags, datasets) is what the Hub reads;
the body says how the student was trained (from its manifest), how it did (the experiment's tables
that name it), and the one command that evaluates it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from agentark.experiments.spec import DistillStage, EvaluateStage, ExperimentConfig
from agentark.models.packs import MODEL_PACKS

TASK_DATASETS = {"gsm8k": "openai/gsm8k"}


def model_card(name: str, adapter_dir: Path, experiment: ExperimentConfig, stage: DistillStage,
               tables: list[str]) -> str:
    """The card of ``adapter_dir`` (published as ``name``); ``tables``: the experiment's result tables."""
    manifest: dict[str, Any] = json.loads((adapter_dir / "manifest.json").read_text())
    base = manifest.get("base_model", "")
    config = manifest.get("config", {})
    task = _task_of(experiment, stage)
    metadata = {
        "base_model": MODEL_PACKS[base].hf_equivalent if base in MODEL_PACKS else base,
        "library_name": "peft",
        "license": "apache-2.0",
        "pipeline_tag": "text-generation",
        "tags": ["agentark", "lora", "distillation", "multi-agent-debate", stage.strategy, *([task] if task else [])],
        **({"datasets": [TASK_DATASETS[task]]} if task in TASK_DATASETS else {}),
    }
    dataset, train = manifest.get("dataset", {}), manifest.get("train", {})
    resources = manifest.get("resources", {})
    evaluations = [s for s in experiment.stages if isinstance(s, EvaluateStage) and s.model == stage.name]
    lines = [
        "---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", "",
        f"# {name}", "",
        f"A LoRA adapter (r={config.get('lora_r')}, alpha {config.get('lora_alpha')}, every linear layer; bf16 "
        f"safetensors) for `{metadata['base_model']}` (AgentArk pack `{base}`), distilled with AgentArk's "
        f"`{stage.strategy}` strategy from the multi-agent run `{stage.traces}` of experiment `{experiment.name}`.",
        "",
        "## Training", "",
        f"- data: {dataset.get('samples')} samples from {dataset.get('questions')} questions "
        f"({100 * dataset.get('corrective_share', 0):.0f}% corrective), data hash `{manifest.get('data_hash')}`",
        f"- settings: {json.dumps({k: config[k] for k in _TRAINING_FIELDS if k in config})}",
        f"- {train.get('global_step')} optimiser steps of {train.get('effective_batch_size')} samples; "
        f"{resources.get('s_per_step')} s/step, peak RSS {resources.get('peak_rss_gib')} GiB, "
        f"{resources.get('precision')}, on {resources.get('cpu')}",
        f"- loss: {_loss_summary(train.get('loss_curve', []))}",
        "",
        "## Evaluation", "",
    ]
    lines += [f"See `{experiment.results}/` ({', '.join(tables) or 'tables pending'}); "
              "the per-item records are kept in " f"`{experiment.kept}/`.", ""]
    for evaluation in evaluations:
        settings = evaluation.settings
        lines += [f"Re-evaluate (`{evaluation.name}`):", "", "    agentark evaluate --model "
                  f"{experiment.publish_dir}/{name} --no-base --task {settings.get('task')} "
                  + (f"--data {settings['task_options']['path']} " if "path" in settings.get("task_options", {}) else "")
                  + f"--split {settings.get('split', 'held-out')} --n {settings.get('n')} "
                  f"--max-new-tokens {settings.get('max_new_tokens', settings.get('sampling', {}).get('max_new_tokens'))}",
                  ""]
    return "\n".join(lines) + "\n"


_TRAINING_FIELDS = ("strategy", "per_question", "source_round", "max_samples", "learning_rate", "num_train_epochs",
                    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "seed")


def _task_of(experiment: ExperimentConfig, stage: DistillStage) -> str | None:
    return experiment.stage(stage.traces).settings.get("task")


def _loss_summary(curve: list[dict[str, float]]) -> str:
    if not curve:
        return "not logged"
    return f"{curve[0]['loss']:.3f} at step {curve[0]['step']} -> {curve[-1]['loss']:.3f} at step {curve[-1]['step']}"
