"""The live progress line of a running search, drawn from the run folder like `automl status`.

It polls the run folder (the same reader as `automl status`, so what it shows is what Tune saved) in a
background thread while the driver blocks in `Tuner.fit()`. On a terminal it is one rich line redrawn
in place; elsewhere (CI logs, pipes) a plain line every `LOG_EVERY_S` seconds.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.text import Text

from automl.runs.folder import RunFolder
from automl.search.tune_state import collect_trials

POLL_S = 2.0
LOG_EVERY_S = 30.0


class SearchProgress:
    """`with SearchProgress(folder, deadline, console): tuner.fit()` shows trials, best so far, time left."""

    def __init__(self, folder: RunFolder, deadline: float, console: Console) -> None:
        self.folder = folder
        self.deadline = deadline
        self.console = console
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="search-progress", daemon=True)

    def __enter__(self) -> SearchProgress:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def line(self) -> Text:
        trials = collect_trials(self.folder)
        n = trials.counts()
        left = max(0.0, self.deadline - time.time())
        text = Text()
        text.append(f"trials {n.done} done", style="bold")
        text.append(f" · {n.running} running · {n.failed} failed", style="dim" if not n.failed else "red")
        best = trials.best()
        if best is not None and best.val_accuracy is not None:
            text.append(f" │ best {best.val_accuracy:.4f} ", style="bold green")
            text.append(best.describe())
        text.append(f" │ {int(left // 60)}:{int(left % 60):02d} left", style="cyan")
        return text

    def _loop(self) -> None:
        if self.console.is_terminal:
            with Live(self._safe_line(), console=self.console, refresh_per_second=2, transient=False) as live:
                while not self._stop.wait(POLL_S):
                    live.update(self._safe_line())
                live.update(self._safe_line())
        else:
            while not self._stop.wait(LOG_EVERY_S):
                self.console.print(self._safe_line())

    def _safe_line(self) -> Text:
        """A line even while Tune rewrites its files: a failed read shows the error, the search goes on."""
        try:
            return self.line()
        except Exception as exc:  # the display must never stop a search
            return Text(f"progress unavailable: {exc}", style="yellow")
