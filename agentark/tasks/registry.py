"""Tasks by name, each with typed settings, so configs and the CLI can name a task and its options.

A task's settings are a pydantic model (``TASK_SETTINGS``): ``--task-option key=value`` and a YAML
``task_options:`` section are checked against it before anything loads, and a typo or a wrong type
is one line naming the option and the valid ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentark.errors import one_line_error
from agentark.tasks.arithmetic import ArithmeticTask
from agentark.tasks.base import Task
from agentark.tasks.choice import ChoiceTask
from agentark.tasks.gsm8k import GSM8KTask
from agentark.tasks.tabular import JsonlTask


class _TaskSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArithmeticSettings(_TaskSettings):
    n_operands: int = Field(4, ge=2, description="Operands per expression (more = harder).")
    seed: int = Field(0, description="Item generator seed (the splits stay disjoint for any seed).")
    max_value: int = Field(30, ge=1, description="Largest operand.")


class _FileSettings(_TaskSettings):
    path: str = Field(description="The data file (JSONL; CLI: --data FILE).")
    held_out: int = Field(0, ge=0, description="Last rows kept out of training as the held-out split.")


class GSM8KSettings(_TaskSettings):
    path: str | None = Field(None, description="GSM8K JSONL (question, answer '... #### n'); none: the hub's "
                             "openai/gsm8k.")
    held_out: int = Field(500, ge=0, description="Last rows kept out of training as the held-out split.")
    hub_id: str = Field("openai/gsm8k", description="Hub dataset used when no path is given.")


class JsonlSettings(_FileSettings):
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str | None = Field(None, description="Field holding item ids (default: the row index).")
    answer_type: Literal["numeric", "math"] = Field("numeric", description="numeric: gold is a number; math: "
                                                    "compared symbolically with math-verify.")


class ChoiceSettings(_FileSettings):
    question_field: str = "question"
    choices_field: str = "choices"
    answer_field: str = Field("answer", description="An option letter or a 0-based index.")
    id_field: str | None = Field(None, description="Field holding item ids (default: the row index).")


TASKS: dict[str, tuple[type[Task], type[_TaskSettings]]] = {
    "arithmetic": (ArithmeticTask, ArithmeticSettings), "gsm8k": (GSM8KTask, GSM8KSettings),
    "jsonl": (JsonlTask, JsonlSettings), "choice": (ChoiceTask, ChoiceSettings)}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
TASK_SETTINGS: dict[str, type[_TaskSettings]] = {name: settings for name, (_, settings) in TASKS.items()}


def task_settings(name: str, options: Mapping[str, Any] | None = None) -> _TaskSettings:
    """Task ``name``'s validated settings; unknown names and options fail with the valid ones listed."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}")
    cls = TASK_SETTINGS[name]
    try:
        return cls.model_validate(dict(options or {}))
    except ValidationError as e:
        message = one_line_error(f"task {name}: ", e, cls)
        missing_path = any(err["type"] == "missing" and err["loc"] == ("path",) for err in e.errors())
        raise ValueError(message + (" (CLI: --data FILE)" if missing_path else "")) from None


def get_task(name: str, **options: Any) -> Task:
    """Build task ``name`` from its (checked) settings."""
    settings = task_settings(name, options)
    return TASKS[name][0](**settings.model_dump(exclude_unset=True))
