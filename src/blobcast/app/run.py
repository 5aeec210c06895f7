"""`run`: one model forward on given or seeded inputs, its blobs
summarised and, with `save`, written to an .npz (running is verify.py's)."""

from __future__ import annotations

from dataclasses import dataclass

from ..check.verify import RunOptions, run_model, save_blobs
from ..fileio import atomic_destination, check_distinct


@dataclass
class RunResult:
    inputs: dict  # name -> the array each input was given
    blobs: dict  # name -> the array computed
    notes: list

    def summary(self) -> list[dict]:
        """Each blob's shape, range and first values."""
        return [{"blob": name, "shape": list(value.shape),
                 "min": float(value.min()) if value.size else None,
                 "max": float(value.max()) if value.size else None,
                 "first": [float(v) for v in value.ravel()[:4]]} for name, value in self.blobs.items()]


def run(model: str, options: RunOptions, *, save: str | None = None,
        overwrite: bool = False) -> RunResult:
    """Run the model; with `save`, its inputs and blobs written there, which
    must be none of the files the run reads."""
    if save:
        _check_save_apart(model, options, save)
    inputs, blobs, notes = run_model(model, options)
    if save:
        with atomic_destination(save, overwrite=overwrite) as temporary:
            save_blobs(temporary, inputs, blobs)
    return RunResult(inputs, blobs, notes)


def _check_save_apart(model: str, options: RunOptions, save: str) -> None:
    given_files = [spec.split("=", 1)[1] for spec in options.inputs if "=" in spec]
    for used in [model, options.prototxt, *options.layer_plugins, *given_files]:
        if used:
            check_distinct(used, save)
