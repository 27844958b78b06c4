"""Tasks by name, so configs and the CLI can name a task and pass its options as plain keywords."""

from __future__ import annotations

import inspect
from typing import Any

from agentark.tasks.arithmetic import ArithmeticTask
from agentark.tasks.base import Task
from agentark.tasks.choice import ChoiceTask
from agentark.tasks.gsm8k import GSM8KTask
from agentark.tasks.tabular import JsonlTask

TASKS: dict[str, type[Task]] = {"arithmetic": ArithmeticTask, "gsm8k": GSM8KTask, "jsonl": JsonlTask, "choice": ChoiceTask}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str, **options: Any) -> Task:
    """Build task ``name``; unknown names and options fail with the valid ones listed (typos are common)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")
    cls = TASKS[name]
    parameters = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ValueError(f"task {name!r} does not take option(s) {unknown}; it takes {sorted(parameters) or 'no options'}")
    missing = sorted(k for k, p in parameters.items() if p.default is inspect.Parameter.empty and k not in options)
    if missing:
        hint = " (CLI: --data FILE)" if missing == ["path"] else ""
        raise ValueError(f"task {name!r} needs option(s) {missing}{hint}")
    return cls(**options)
