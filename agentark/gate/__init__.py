"""The rollout gate (adopt / hybrid / keep-multi-agent) and the pilot report."""

from agentark.gate.decide import (
    Decision,
    GateConfig,
    GateResult,
    HybridEstimate,
    ServedLatency,
    agreement_confidence,
    choose_hybrid,
    decide,
    estimate_hybrid,
    plan_hybrid,
)
from agentark.gate.report import write_report

__all__ = [
    "Decision", "GateConfig", "GateResult", "HybridEstimate", "ServedLatency", "agreement_confidence", "choose_hybrid",
    "decide", "estimate_hybrid", "plan_hybrid", "write_report",
]
