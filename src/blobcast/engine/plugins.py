"""Layer plugins: a Python file, named by the user with --layer-plugin, that
registers NumPy/CuPy implementations of fork layers the engine lacks.

A plugin runs its code when imported, so only a file the user names is ever
imported, never one a model names. It registers types as the built-in ones
do:

    from blobcast.layers import LayerOp, register

    @register("FancyFork")
    class FancyFork(LayerOp):
        def forward(self, x):
            return (self.xp.tanh(x),)
"""

from __future__ import annotations

import importlib.util
import os

from ..errors import BlobcastError
from ..layers import LAYER_TYPES

_LOADED: dict[str, list[str]] = {}  # real path -> the types it registered


def load_layer_plugin(path: str) -> list[str]:
    """Import a plugin file once; the layer types it registered."""
    real = os.path.realpath(path)
    if real in _LOADED:
        return _LOADED[real]
    if not os.path.isfile(real):
        raise BlobcastError("no such layer plugin file", path)
    spec = importlib.util.spec_from_file_location(f"blobcast_layer_plugin_{len(_LOADED)}", real)
    if spec is None or spec.loader is None:
        raise BlobcastError("not a Python file", path)
    module = importlib.util.module_from_spec(spec)
    before = set(LAYER_TYPES)
    try:
        spec.loader.exec_module(module)
    except BlobcastError:
        raise
    except Exception as error:  # the plugin's own code failed
        raise BlobcastError(f"the layer plugin failed to load: {type(error).__name__}: {error}",
                            path) from error
    added = sorted(set(LAYER_TYPES) - before)
    if not added:
        raise BlobcastError("the layer plugin registers no layer type (decorate a LayerOp "
                            "subclass with blobcast.layers.register)", path)
    _LOADED[real] = added
    return added
