"""Tasks: what a function computes. One module each.

`classify` (single- and multi-label) runs through `funcformer._function`; every other task
module offers `train(data, **options) -> Function` and `load(directory, manifest, **options)
-> Function`, and the functions they make share the `Function` interface.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .._errors import TaskError
from .classify import Classify, MultiLabel

TASKS = ("classify", "embed", "generate", "pair", "search", "tag", "zero_shot")


def task_class(name: str, multi_label: bool = False) -> type[Classify]:
    """The head-based task class for `classify`, or a TaskError listing the tasks there are."""
    if name != "classify":
        raise TaskError(f"Unknown task '{name}'. Available: {', '.join(TASKS)}.")
    return MultiLabel if multi_label else Classify


def task_module(name: str) -> ModuleType:
    """The module implementing task `name` (not `classify`)."""
    if name not in TASKS or name == "classify":
        raise TaskError(f"Unknown task '{name}'. Available: {', '.join(TASKS)}.")
    return importlib.import_module(f"{__name__}.{name}")
