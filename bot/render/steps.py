"""Steps of a long operation at the terminal: a live line with a progress bar for each step.

A step's detail that starts with `NN% · ` (see `commands.backup.progress_detail`) fills its bar;
other running steps pulse. Without a terminal (a pipe, CI) each change of status is one plain line.
"""

from __future__ import annotations

import re
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from commands.destructive import Step

_PERCENT = re.compile(r"^(\d{1,3})% · (.*)$", re.DOTALL)
_MARKS = {
    "pending": "[dim]·[/]",
    "running": "[yellow]…[/]",
    "done": "[green]✓[/]",
    "failed": "[red]✗[/]",
    "skipped": "[dim]-[/]",
}


class StepBars:
    """Show steps as they change; use as a context manager around the operation."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.bars = Progress(
            TextColumn("{task.fields[mark]}"),
            TextColumn("{task.description:<18}"),
            BarColumn(bar_width=28),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._printed: dict[str, str] = {}

    def __enter__(self) -> StepBars:
        if self.live:
            self.bars.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.live:
            self.bars.stop()

    async def publish(self, steps: list[Step]) -> None:
        """Show the latest state of every step."""
        for step in steps:
            if self.live:
                self._show(step)
            elif self._printed.get(step.name) != step.status:
                self._printed[step.name] = step.status
                self.console.print(f"  \\[{step.status}] {escape(step.name)} {escape(step.detail)}".rstrip())

    def _show(self, step: Step) -> None:
        match = _PERCENT.match(step.detail)
        percent = float(match.group(1)) if match else None
        detail = match.group(2) if match else step.detail
        if step.duration_ms is not None:
            detail = f"{detail} ({step.duration_ms / 1000:.1f} s)".strip()
        mark, shown = _MARKS[step.status], escape(detail[:120])
        task = self._tasks.get(step.name)
        if task is None:
            task = self.bars.add_task(escape(step.name), total=None, mark=mark, detail=shown)
            self._tasks[step.name] = task
        if step.status in ("done", "failed", "skipped"):
            completed = 100 if step.status == "done" else 0
            self.bars.update(task, total=100, completed=completed, mark=mark, detail=shown)
            self.bars.stop_task(task)
        elif percent is not None:
            self.bars.update(task, total=100, completed=percent, mark=mark, detail=shown)
        else:
            self.bars.update(task, mark=mark, detail=shown)
