"""Tasks: what a function computes. One module each; `TASKS` maps a name to its class."""

from __future__ import annotations

from .._errors import TaskError
from .classify import Classify

TASKS = {"classify": Classify}


def task_class(name: str) -> type[Classify]:
    """The class for a task name, or a TaskError listing the tasks there are."""
    try:
        return TASKS[name]
    except KeyError:
        raise TaskError(f"Unknown task '{name}'. Available: {', '.join(sorted(TASKS))}.") from None
