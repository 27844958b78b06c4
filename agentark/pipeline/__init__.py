"""Stages as functions, the same for every command: generate -> distill -> evaluate -> serve/report.

Each ``agentark`` command is one stage function here, and ``agentark run`` calls the same functions
in order (:mod:`agentark.pipeline.run`), so there is one evaluation path and one on-disk layout:

    generation    :func:`generate`      ``agentark generate``  tasks + engines + mas -> traces/
    distillation  :func:`distill`       ``agentark distill``   traces -> students/<strategy>/
    evaluation    :func:`evaluate_job`  ``agentark evaluate``  any system on held-out items -> eval/<name>/
    report        serve, report        (``agentark run``)     latency over HTTP, the gate -> served/, report/

One cache mechanism (:mod:`agentark.pipeline.cache`: ``stage.json`` + fingerprint) decides what
re-runs, in every stage directory.
"""

from agentark.pipeline.cache import EngineSlot, RunConfigMismatch, StageError, StageRecord, check_stage, run_stage
from agentark.pipeline.chunk import GenerateConfig, run_chunk
from agentark.pipeline.distillation import Distilled, distill
from agentark.pipeline.evaluation import EvalJob, EvaluateConfig, Evaluated, evaluate_job, evaluate_models
from agentark.pipeline.generation import generate
from agentark.pipeline.run import PipelineConfig, PipelineError, run_pipeline

__all__ = [
    "Distilled", "EngineSlot", "EvalJob", "EvaluateConfig", "Evaluated", "GenerateConfig", "PipelineConfig",
    "PipelineError", "RunConfigMismatch", "StageError", "StageRecord", "check_stage", "distill", "evaluate_job",
    "evaluate_models", "generate", "run_chunk", "run_pipeline", "run_stage",
]
