"""Tasks by name, each with typed settings, so configs and the CLI can name a task and its options.

A task's settings are a pydantic model (``TASK_SETTINGS``): ``--task-option key=value`` and a YAML
``task_options:`` section are checked against it before anything loads, and a typo or a wrong type
is one line naming the option and the valid ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentark.errors import one_line_error
from agentark.tasks.arithmetic import ArithmeticTask
from agentark.tasks.base import Task
from agentark.tasks.choice import ChoiceTask
from agentark.tasks.gsm8k import GSM8KTask
from agentark.tasks.tabular import JsonlTask


class TaskSettings(BaseModel):
    """What every task's settings share: strict field names and :meth:`identity`."""

    model_config = ConfigDict(extra="forbid")

    def identity(self) -> dict[str, Any]:
        """The options that decide a task's items and grading, for a run's hash.

        Every task option changes outputs, so none is left out; but options at their default value
        are (``exclude_defaults``): a run that wrote a default out, or one made before a new
        defaulted option existed, keeps its hash and resumes. Paths come out as text (JSON mode).
        """
        return self.model_dump(mode="json", exclude_defaults=True)


class ArithmeticSettings(TaskSettings):
    """``arithmetic``: generated integer expressions, no data file (:mod:`agentark.tasks.arithmetic`)."""

    n_operands: int = Field(4, ge=2, description="Operands per expression. More operands make a harder task: "
                            "raise it when a model solves nearly every item and the comparison saturates.")
    seed: int = Field(0, description="Item generator seed. Change it for a fresh set of questions of the same "
                      "difficulty (train and held-out stay disjoint for any seed).")
    max_value: int = Field(30, ge=1, description="Largest operand; larger values make products harder to "
                           "compute by heart.")


_HELD_OUT = ("Last rows of the file kept out of training as the held-out split; set it so the held-out "
             "questions a student is evaluated on are never ones it was distilled from.")
_ID_FIELD = ("Field holding item ids (default: the row index). Set it when rows may be reordered or added in "
             "the middle: ids join traces across runs, so a stable id keeps resumes and comparisons right.")


class _FileSettings(TaskSettings):
    path: Path = Field(description="The data file (JSONL, or CSV by its .csv suffix; CLI: --data FILE).")
    held_out: int = Field(0, ge=0, description=_HELD_OUT)
    question_field: str = Field("question", description="Field holding the question text; set it to read a "
                                "file whose columns are named otherwise, without rewriting it.")
    id_field: str | None = Field(None, description=_ID_FIELD)


class GSM8KSettings(TaskSettings):
    """``gsm8k``: grade-school maths, answers ending in ``#### <number>`` (:mod:`agentark.tasks.gsm8k`)."""

    path: Path | None = Field(None, description="A GSM8K JSONL file (question, answer '... #### n'). Without "
                              "one the hub's dataset is downloaded; give a file to work offline or on a "
                              "fixed copy.")
    held_out: int = Field(500, ge=0, description=_HELD_OUT)
    hub_id: str = Field("openai/gsm8k", description="Hub dataset used when no path is given; set it to a "
                        "mirror or a fork with the same columns.")


class JsonlSettings(_FileSettings):
    """``jsonl``: questions with gold answers from any JSONL/CSV file (:class:`agentark.tasks.tabular.JsonlTask`)."""

    answer_field: str = Field("answer", description="Field holding the gold answer.")
    answer_type: Literal["numeric", "math"] = Field("numeric", description="numeric: the gold answer is a "
                                                    "number, compared as one; math: any expression, compared "
                                                    "symbolically with math-verify (for answers like \\sqrt{2}).")


class ChoiceSettings(_FileSettings):
    """``choice``: multiple choice, answers are option letters (:mod:`agentark.tasks.choice`)."""

    choices_field: str = Field("choices", description="Field holding the list of option texts (2 to 10).")
    answer_field: str = Field("answer", description="Field holding the correct option, as a letter or a 0-based "
                              "index.")


TASKS: dict[str, tuple[type[Task], type[TaskSettings]]] = {
    "arithmetic": (ArithmeticTask, ArithmeticSettings), "gsm8k": (GSM8KTask, GSM8KSettings),
    "jsonl": (JsonlTask, JsonlSettings), "choice": (ChoiceTask, ChoiceSettings)}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
TASK_SETTINGS: dict[str, type[TaskSettings]] = {name: settings for name, (_, settings) in TASKS.items()}


def task_settings(name: str, options: Mapping[str, Any] | None = None) -> TaskSettings:
    """Task ``name``'s validated settings; a one-line ``ValueError`` names an unknown task or option
    with the valid ones, or a bad value with what it must be."""
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
    """Build task ``name`` from its settings, checked before any file is read (every field is passed, so
    the settings are the one place task defaults live)."""
    settings = task_settings(name, options)
    return TASKS[name][0](**settings.model_dump())
