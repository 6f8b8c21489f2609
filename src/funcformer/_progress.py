"""A progress bar (rich, on stderr) with loss and ETA; a silent stand-in when turned off."""

from __future__ import annotations

from types import TracebackType
from typing import Any


class Progress:
    """Counts steps of one phase (`with Progress("training", total=n) as bar: bar.advance()`)."""

    def __init__(self, description: str, total: int, enabled: bool = True) -> None:
        self.description = description
        self.total = total
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            # Loss and notes go last, so a narrow terminal cuts them rather than the bar.
            self._bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), console=Console(stderr=True),
                transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, info="")
        return self

    def advance(self, steps: int = 1, **info: float | str) -> None:
        if self._bar is not None:
            text = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in info.items())
            self._bar.update(self._task, advance=steps, **({"info": text} if info else {}))

    def finish(self, note: str) -> None:
        """Mark the phase complete early (e.g. early stopping), with a note in place of loss."""
        if self._bar is not None:
            self._bar.update(self._task, completed=self.total, info=note)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
