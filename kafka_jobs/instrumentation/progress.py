"""Progress of long CLI work: a rich progress bar on a terminal, periodic lines elsewhere.

    with Progress("replaying", total=len(letters)) as progress:
        for letter in letters:
            ...
            progress.advance()

Both show done / total, the rate and the time left; logs and CI output get a
line at most every `interval` seconds (and a last one), never one per item.
"""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID


class Progress:
    """Counts work done toward `total` and shows it (a context manager)."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: IO[str] | None = None,
        interval: float = 2.0,
        bar: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._interval = interval
        self._started = time.monotonic()
        self._shown = 0.0
        self._bar = self._stream.isatty() if bar is None else bar
        self._rich: RichProgress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Progress:
        self._started = self._shown = time.monotonic()
        if self._bar:
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    TaskProgressColumn,
                    TextColumn,
                    TimeRemainingColumn,
                )
                from rich.progress import Progress as RichProgress
            except ImportError:  # a trimmed install without rich: lines then
                self._bar = False
            else:
                self._rich = RichProgress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TaskProgressColumn(),
                    TextColumn("{task.fields[rate]}"),
                    TimeRemainingColumn(),
                    console=Console(file=self._stream),
                    transient=False,
                )
                self._rich.start()
                self._task = self._rich.add_task(self.label, total=self.total, rate="")
        return self

    def advance(self, count: int = 1) -> None:
        """Note `count` more items done."""
        self.done += count
        now = time.monotonic()
        if self._rich is not None:
            if self._task is not None:
                self._rich.update(self._task, completed=self.done, rate=f"{self.rate():,.0f}/s")
        elif now - self._shown >= self._interval:
            self._shown = now
            self._line()

    def update(self, done: int) -> None:
        """Set the count of items done (for work counted elsewhere)."""
        self.advance(done - self.done)

    def rate(self) -> float:
        """Items per second so far."""
        elapsed = time.monotonic() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def describe(self) -> str:
        """`label 5,000/20,000 (25%), 12,345/s, 1s left`."""
        rate = self.rate()
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        left = ""
        if rate and self.done < self.total:
            left = f", {(self.total - self.done) / rate:,.0f}s left"
        return f"{self.label} {self.done:,}/{self.total:,}{share}, {rate:,.0f}/s{left}"

    def _line(self) -> None:
        print(f"  {self.describe()}", file=self._stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
        else:
            self._line()
