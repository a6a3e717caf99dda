"""Progress lines on stderr while a search runs (stdout stays for the table)."""

from __future__ import annotations

import sys
import time

from rich.console import Console


class Progress:
    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.quiet = quiet
        self.start = time.monotonic()

    def _elapsed(self) -> str:
        return f"[dim]{time.monotonic() - self.start:6.1f}s[/dim]"

    def step(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"{self._elapsed()} {message}")

    def warn(self, message: str) -> None:
        """Something the user should know even with --quiet: the run goes on, but not as they asked."""
        self.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    def candidate(self, index: int, total: int, name: str, outcome: str, detail: str) -> None:
        colour = {"accepted": "green", "rejected": "yellow", "failed": "red"}.get(outcome, "white")
        self.step(f"[{index}/{total}] {name:<32} [{colour}]{outcome}[/{colour}] {detail}")

    def flush(self) -> None:
        sys.stderr.flush()
