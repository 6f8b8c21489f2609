"""The exception hierarchy. Library code raises these; only the CLI turns them into exit codes.

    FuncformerError
    ├── DataError          bad training/evaluation/prediction input (file, line, field, fix)
    ├── BackboneNotFound   no backbone resolved from a name or path (what was tried, what to do)
    ├── ArtifactError      a function artifact is missing, corrupt, or does not match its backbone
    ├── TaskError          a task or method was asked for something it cannot do
    └── MissingExtra       an optional feature's packages are not installed (the pip line to run)
"""

from __future__ import annotations

import numbers
from typing import Any


class FuncformerError(Exception):
    """Base class of every error funcformer raises on purpose.

    >>> try:
    ...     raise DataError("reviews.csv, line 3, field 'text': the text is empty.")
    ... except FuncformerError as err:
    ...     print(err)
    reviews.csv, line 3, field 'text': the text is empty.
    """


class DataError(FuncformerError, ValueError):
    """Input data is malformed; the message names the file, line and field, and a fix."""


class BackboneNotFound(FuncformerError, LookupError):
    """No backbone could be resolved; the message lists every place that was tried."""


class ArtifactError(FuncformerError):
    """A saved function cannot be loaded (missing file, format version, backbone digest)."""


class TaskError(FuncformerError, ValueError):
    """A task or training method was configured in a way it does not support."""


class MissingExtra(FuncformerError, ImportError):
    """An optional dependency is missing; the message gives the `pip install` line."""

    def __init__(self, feature: str, package: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'funcformer[{feature}]'"
        )


def for_option(name: str, error: FuncformerError) -> FuncformerError:
    """`error`, marked as caused by the call option `name`: the server answers with field
    `options.<name>`. The mark is an attribute, so it survives pickling (Ray).

    >>> for_option("k", TaskError("k must be at least 1.")).option
    'k'
    """
    error.option = name  # type: ignore[attr-defined]
    return error


def is_whole(value: Any) -> bool:
    """An integer of any kind (Python's, NumPy's) but not a bool: what option checks accept
    as a whole number.

    >>> import numpy as np
    >>> is_whole(3), is_whole(np.int64(3)), is_whole(True), is_whole(3.0)
    (True, True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number of any kind (int, float, NumPy's) but not a bool.

    >>> import numpy as np
    >>> is_real(0.5), is_real(np.float32(0.5)), is_real(2), is_real(False), is_real("1")
    (True, True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def cosine_threshold(value: Any, task: str) -> float:
    """`value` as a cosine-similarity threshold (-1 to 1), or a TaskError saying so: a search
    "no answer" or zero-shot multi-label cut outside that range returns nothing or everything.

    >>> cosine_threshold(0.35, "search")
    0.35
    >>> cosine_threshold("abc", "search")
    Traceback (most recent call last):
    ...
    funcformer._errors.TaskError: search: threshold must be a cosine similarity from -1 to 1, \
got 'abc'. Fix: give a number such as 0.4 (higher: stricter), or leave it out for the default.
    """
    if not is_real(value) or not -1.0 <= float(value) <= 1.0:
        raise TaskError(f"{task}: threshold must be a cosine similarity from -1 to 1, got "
                        f"{value!r}. Fix: give a number such as 0.4 (higher: stricter), or "
                        "leave it out for the default.")
    return float(value)


def require(module: str, extra: str):
    """Import an optional module or raise `MissingExtra` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtra(extra, module.split(".")[0]) from err
