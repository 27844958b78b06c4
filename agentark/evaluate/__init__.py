"""Evaluation: metrics, paired statistics, robustness and lm-eval parity of systems run on the same items
(the running itself is the pipeline's evaluate stage, :mod:`agentark.pipeline.evaluation`)."""

from agentark.evaluate.metrics import (
    EvalResult,
    Pricing,
    SystemMetrics,
    compare,
    compute_metrics,
    sc_k_for_budget,
    summarize_debate,
)
from agentark.evaluate.robustness import (
    PERTURBATION_TYPES,
    PerturbedTask,
    ReviewProbe,
    RobustnessTable,
    load_perturbation_file,
    perturb,
    review_metrics,
    review_probe,
    robustness_table,
)

__all__ = [
    "EvalResult",
    "PERTURBATION_TYPES",
    "PerturbedTask",
    "Pricing",
    "ReviewProbe",
    "RobustnessTable",
    "SystemMetrics",
    "compare",
    "compute_metrics",
    "load_perturbation_file",
    "perturb",
    "review_metrics",
    "review_probe",
    "robustness_table",
    "sc_k_for_budget",
    "summarize_debate",
]
