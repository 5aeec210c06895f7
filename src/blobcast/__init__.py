"""blobcast: convert, inspect and verify Caffe models."""

from .api import ConversionReport, ForwardCheck, convert, load, save, training_step
from .errors import BlobcastError, BlobcastWarning, CheckFailed, FormatError
from .model import Blob, Layer, Model, ParamRef
from .params import Message
from .solver import SolverState
from .tensor import ArrayTensor, LazyTensor, Tensor
from .training import Training, optimizer_state

__version__ = "0.1.0"

__all__ = [
    "load", "save", "convert", "ConversionReport", "ForwardCheck", "Model", "Layer", "Blob", "ParamRef",
    "Message", "SolverState", "Tensor", "ArrayTensor", "LazyTensor", "BlobcastError",
    "BlobcastWarning", "CheckFailed", "FormatError", "Training", "optimizer_state", "training_step",
    "__version__",
]
