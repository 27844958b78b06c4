"""Tasks: questions + prompt + answer extraction + grading. See :func:`get_task`."""

from agentark.tasks.base import SPLITS, Extraction, Item, Split, Task
from agentark.tasks.registry import TASK_NAMES, TASK_SETTINGS, get_task, task_settings

__all__ = ["SPLITS", "Extraction", "Item", "Split", "Task", "TASK_NAMES", "TASK_SETTINGS", "get_task", "task_settings"]
