"""What the commands print: the consoles, the progress bar, and the lines and
tables of convert's and verify's reports. Every string from a file goes
through `escape` (display.safe) before it reaches rich."""

from __future__ import annotations

from rich.console import Console

from .display import safe as escape

# emoji=False: a name from a file such as ":smile:" is shown as written
stdout = Console(highlight=False, soft_wrap=True, emoji=False)
stderr = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


class ProgressBar:
    """A rich progress bar on a terminal; nothing otherwise."""

    def __init__(self, total: int, label: str):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress("[progress.description]{task.description}", BarColumn(),
                                  DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                  console=stderr, transient=True)
        self._task = self._progress.add_task(escape(label), total=max(total, 1))
        self._progress.start()

    def advance(self, amount: int) -> None:
        self._progress.advance(self._task, amount)

    def close(self) -> None:
        self._progress.stop()


def progress_factory(json_output: bool):
    if json_output or not stderr.is_terminal:
        return None
    return ProgressBar


def human_bytes(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"


def summary_lines(report) -> list[str]:
    lines = []
    if report.weights is not None:
        lines += summary_lines(report.weights)
    what = f"{report.layers} layers, " if report.destination_format not in (
        "solverstate", "solverstate-h5") else ""
    forward = ""
    if report.forward:
        forward = (f"; forward ({report.forward.get('device', 'cpu')}): "
                   f"{report.forward['outputs']} outputs agree "
                   f"(max abs error {report.forward['max_abs_error']:.3g})")
    lines.append(
        f"{escape(report.source)} -> {escape(report.destination)}: {what}{report.tensors} tensors, "
        f"{human_bytes(report.bytes)}, {report.seconds:.2f} s, check: {escape(report.check)}{forward}")
    return lines


def format_error(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"{value:.3g}"


def print_verify(report) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("blob", "shape", "max abs", "mean abs", "max rel", "cosine", "min atol",
                   "min rtol", ""):
        table.add_column(column, justify="left" if column in ("blob", "shape", "") else "right")
    for c in report.compared:
        status = "[green]ok[/green]" if c.passed else f"[red]MISMATCH[/red] {escape(c.problem)}"
        cosine = "-" if c.cosine_similarity is None else f"{c.cosine_similarity:.6f}"
        table.add_row(escape(c.name), str(c.shape), format_error(c.max_abs_error),
                      format_error(c.mean_abs_error), format_error(c.max_rel_error), cosine,
                      format_error(c.min_atol), format_error(c.min_rtol), status)
    stdout.print(table)
    for line in report.explanations():
        stdout.print(escape(line))
    for note in report.notes:
        stderr.print(f"blobcast: note: {escape(note)}")
    verdict = f"{len(report.compared)} blobs within {report.tolerance_text()}"
    if report.problem:
        stdout.print(f"FAIL: {escape(report.problem)}")
    elif report.passed:
        stdout.print(f"PASS: {verdict} ({report.seconds:.2f} s, {report.device})")
    else:
        first = report.first_mismatch
        failed = sum(not c.passed for c in report.compared)
        stdout.print(f"FAIL: {failed} of {len(report.compared)} blobs differ; the first in net "
                     f"order is {escape(repr(first.name))}")
