"""The driver's view of a Ray compare: one line per run (model, fold, state, epoch, val macro-F1, node), read
from the run folders on the shared storage (``metrics.csv`` and the task's ``<run>.worker.json``), so tasks need no
channel back to the driver."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from classbench.comparison.replicates import Job
from classbench.console import console, info


def run_line(job: Job, state: str) -> list[str]:
    """The cells of one run's line: model, fold/seed, state, epoch, val macro-F1, node."""
    from classbench.comparison.ray_engine import worker_of
    from classbench.runs import read_metrics

    scored = [r for r in read_metrics(job.run_dir) if r.get("val_macro_f1") is not None]
    epoch = f"{int(scored[-1]['epoch'])}" if scored and scored[-1].get("epoch") is not None else "-"
    f1 = f"{scored[-1]['val_macro_f1']:.3f}" if scored else "-"
    node = str(worker_of(Path(job.run_dir)).get("node", "-"))
    return [job.name, job.label or "-", state, epoch, f1, node]


class RunBoard:
    """A rich live table of the runs of one wave (a plain line per finished run when ``enabled`` is off)."""

    COLUMNS = ("model", "run", "state", "epoch", "val F1", "node")

    def __init__(self, jobs: list[Job], enabled: bool = True) -> None:
        self.jobs = jobs
        self.state = {job.run_dir: "queued" for job in jobs}
        self.enabled = enabled and console.is_terminal
        self._live: Any = None

    def _table(self) -> Any:
        from rich import box
        from rich.markup import escape
        from rich.table import Table

        from classbench.comparison.ray_engine import worker_file

        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold", title="Ray runs", title_justify="left")
        for name in self.COLUMNS:
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=24 if name in ("model", "node") else None)
        for job in self.jobs:
            state = self.state[job.run_dir]
            if state == "queued" and worker_file(Path(job.run_dir)).is_file():
                state = "running"
            table.add_row(*(escape(cell) for cell in run_line(job, state)))
        return table

    def finished(self, job: Job, error: str | None) -> None:
        """Mark ``job`` done (or failed); without a live display, say so in one line."""
        self.state[job.run_dir] = "failed" if error else "done"
        if not self.enabled:
            cells = run_line(job, self.state[job.run_dir])
            info(f"{cells[0]} {cells[1]}: {cells[2]} (epoch {cells[3]}, val macro-F1 {cells[4]}, node {cells[5]})"
                 + (f": {error}" if error else ""), markup=False)

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._table())

    def __enter__(self) -> RunBoard:
        if self.enabled:
            from rich.live import Live

            self._live = Live(self._table(), console=console, refresh_per_second=1, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(kind, value, tb)
            self._live = None
