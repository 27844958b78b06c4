"""Traces: the structured record of every agent's every round, stored append-only."""

from agentark.traces.schema import AgentTurn, QuestionTrace
from agentark.traces.store import (
    TraceFileError,
    TraceStore,
    read_json,
    read_traces,
    stage_record,
    task_of_run,
    write_json_atomic,
)

__all__ = ["AgentTurn", "QuestionTrace", "TraceFileError", "TraceStore", "read_json", "read_traces", "stage_record",
           "task_of_run", "write_json_atomic"]
