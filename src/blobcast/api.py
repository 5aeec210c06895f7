"""The public functions, each from its use case (blobcast.app) or from
blobcast.io: load, save, convert, modularize, training_step."""

from __future__ import annotations

from .app.convert import convert
from .app.modularize import modularize
from .app.report import ConversionReport
from .app.training_step import training_step
from .check.forward import ForwardCheck
from .io import load, save

__all__ = ["ConversionReport", "ForwardCheck", "convert", "load", "modularize", "save",
           "training_step"]
