"""Evaluation: run systems on the same items, then metrics, paired statistics and robustness."""

from agentark.evaluate.metrics import Pricing, SystemMetrics, compare, compute_metrics, sc_k_for_budget, summarize_debate
from agentark.evaluate.robustness import (
    PERTURBATION_TYPES,
    PerturbedTask,
    RobustnessTable,
    load_perturbation_file,
    perturb,
    review_metrics,
    review_probe,
    robustness_table,
)
from agentark.evaluate.run import EvalResult, evaluate_system

__all__ = [
    "EvalResult", "PERTURBATION_TYPES", "PerturbedTask", "Pricing", "RobustnessTable", "SystemMetrics", "compare",
    "compute_metrics", "evaluate_system", "load_perturbation_file", "perturb", "review_metrics", "review_probe",
    "robustness_table", "sc_k_for_budget", "summarize_debate",
]
