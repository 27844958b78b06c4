"""Tasks: questions + prompt + answer extraction + grading. See :func:`get_task`."""

from agentark.tasks.base import SPLITS, Extraction, Item, Split, Task
from agentark.tasks.registry import (
    TASK_NAMES,
    TASK_SETTINGS,
    ArithmeticSettings,
    ChoiceSettings,
    GSM8KSettings,
    JsonlSettings,
    TaskSettings,
    get_task,
    task_settings,
)

__all__ = ["SPLITS", "TASK_NAMES", "TASK_SETTINGS", "ArithmeticSettings", "ChoiceSettings", "Extraction",
           "GSM8KSettings", "Item", "JsonlSettings", "Split", "Task", "TaskSettings", "get_task", "task_settings"]
