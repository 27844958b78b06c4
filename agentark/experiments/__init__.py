"""Experiments: stages in the order that yields evidence soonest, each kept in git the moment it finishes.

    spec.py     ExperimentConfig: the stages (generate, distill, evaluate, compare) and where they live
    runner.py   ExperimentRunner: run / keep_now / status; resumes in any checkout from the kept folder
    kept.py     the kept folder's layout: traces, records, the latest checkpoint, the bf16 adapter
    card.py     the model card of a published adapter
"""

from agentark.experiments.runner import ExperimentRunner, StageRefused, StageStatus
from agentark.experiments.spec import ExperimentConfig

__all__ = ["ExperimentConfig", "ExperimentRunner", "StageRefused", "StageStatus"]
