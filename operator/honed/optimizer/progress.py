"""Progress lines on stderr while a search runs (stdout stays for the table)."""

from __future__ import annotations

import sys
import time

from rich.console import Console


class Progress:
    """Timestamped progress lines on stderr (stdout stays for the table); ``quiet`` drops all but warnings."""

    def __init__(self, quiet: bool = False) -> None:
        """Start the clock that each line's elapsed seconds count from."""
        self.console = Console(stderr=True, highlight=False)
        self.quiet = quiet
        self.start = time.monotonic()

    def _elapsed(self) -> str:
        return f"[dim]{time.monotonic() - self.start:6.1f}s[/dim]"

    def step(self, message: str) -> None:
        """Print one progress line, unless quiet."""
        if not self.quiet:
            self.console.print(f"{self._elapsed()} {message}")

    def warn(self, message: str) -> None:
        """Something the user should know even with --quiet: the run goes on, but not as they asked."""
        self.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    def candidate(self, index: int, total: int, name: str, outcome: str, detail: str) -> None:
        """Print one candidate's outcome (``[3/9] name accepted detail``), coloured by outcome."""
        colour = {"accepted": "green", "rejected": "yellow", "failed": "red"}.get(outcome, "white")
        self.step(f"[{index}/{total}] {name:<32} [{colour}]{outcome}[/{colour}] {detail}")

    def flush(self) -> None:
        """Flush the progress lines written so far."""
        sys.stderr.flush()
