"""Running an .onnx file for the forward checks, `verify` and `run`: with
onnxruntime when it is installed, else with onnx's own reference evaluator.

onnxruntime is handed the graph alone, each initializer pointing at its own
bytes in the model file as external data, so the runtime maps the values in
place instead of parsing and copying the whole file (VGG16-size: 1.2-2.3 s
and 1 GB -> 0.1 s and the mapped pages only). The references are made here,
from the scan that found each value's bytes, and name only the model file.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto

from blobcast.check.runner import Runner
from blobcast.errors import BlobcastError
from blobcast.limits import check_allocation

from .onnx_fold import data_propagation_is_bounded
from .onnx_format import map_onnx
from .onnx_prune import SkippedNode, blocked_outputs, keep_outputs, unrunnable_nodes
from .onnx_tensors import NUMPY_OF, SHAPE_VALUES, all_tensors, inferred_bytes
from .onnx_versions import installed_runtime, maps_values_in_place, runtime_loads, runtime_newest_opset

# Where onnxruntime looks for the external data of a model given as bytes.
_FOLDER_KEY = "session.model_external_initializers_file_folder_path"


def _check_value_sizes(onnx_model, raw: dict, buf, path: str) -> None:
    """Refuse, before a runtime allocates it, any value whose inferred size is
    over the memory budget (a 200-byte model can ConstantOfShape 75 GB)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(onnx_model)
    for tensor in probe.graph.initializer:
        dtype = NUMPY_OF.get(tensor.data_type)
        if tensor.name in raw and dtype is not None and dtype.kind in "iub":
            start, end = raw[tensor.name]
            if end - start <= SHAPE_VALUES * dtype.itemsize:
                tensor.raw_data = bytes(buf[start:end])
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, data_prop=data_propagation_is_bounded(probe))
    except Exception:
        return  # the runtime reports what it cannot run
    producers = {out: node for node in inferred.graph.node for out in node.output}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        nbytes = inferred_bytes(value, 4)
        if nbytes is None:
            continue
        node = producers.get(value.name)
        what = (f"running the {node.op_type} node {node.name or value.name!r}" if node is not None
                else f"the value {value.name!r}")
        check_allocation(nbytes, what, path)


# Values under a page stay inline: a mapping costs a page, and shape
# inference reads the small integer ones (shapes, axes, sizes).
_MAPPED_BYTES = 4096


def _point_at_file(tensor: TensorProto, file_name: str, span: tuple[int, int]) -> None:
    """Make `tensor` (its raw data stripped) external data at `span` of `file_name`."""
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", file_name), ("offset", span[0]), ("length", span[1] - span[0])):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)


class OnnxRunner(Runner):
    """Runs an .onnx file: onnxruntime where installed, else onnx's reference
    evaluator (NumPy, slower; its grouped ConvTranspose is wrong in onnx 1.23,
    so verification of such models needs onnxruntime). Of runner_for's
    options it takes the device (onnxruntime's execution provider)."""

    engine_name, part = "onnxruntime", "node"

    def __init__(self, path: str, device: str = "cpu"):
        self.path = path
        self.engine_name, self.in_place = "onnx reference evaluator", False
        if runtime_loads(installed_runtime(), np.__version__):
            try:
                import onnxruntime

                self.engine_name = "onnxruntime"
                self.in_place = maps_values_in_place(onnxruntime.__version__)
            except ImportError:
                pass
        self.providers = self._providers(device)
        self.device = "gpu" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        # The graph alone: tensor values are read by whichever engine runs it.
        onnx_model, raw, buf = map_onnx(path)  # every external reference checked before any is read
        graph = onnx_model.graph
        initializer_names = {t.name for t in graph.initializer}
        try:
            _check_value_sizes(onnx_model, raw, buf, path)
            self._inline = {name: bytes(buf[start:end]) for name, (start, end) in raw.items()
                            if self.in_place and name in initializer_names
                            and end - start < _MAPPED_BYTES}
        finally:
            buf.close()
        self._graph_only, self._raw_spans = onnx_model, raw
        self.external = any(t.data_location == TensorProto.EXTERNAL for _, t in all_tensors(onnx_model))
        self.inputs = {}
        for item in graph.input:
            if item.name in initializer_names:
                continue
            dims = [d.dim_value if d.HasField("dim_value") else None
                    for d in item.type.tensor_type.shape.dim]
            self.inputs[item.name] = None if None in dims else dims
        self.outputs = [item.name for item in graph.output]
        # Outputs behind custom nodes: the rest is run without them.
        self.uncomputed = blocked_outputs(onnx_model)
        self.skipped = [SkippedNode(node.name or node.output[0], node.op_type,
                                    f"not run: a custom node of domain '{node.domain}', which no "
                                    "ONNX runtime implements")
                        for node in unrunnable_nodes(onnx_model)]

    def _providers(self, device: str) -> list[str]:
        """onnxruntime's execution providers for `device`, as the engine reads
        it: "gpu" is CUDA or a refusal, "auto" CUDA where there is one."""
        if device not in ("cpu", "gpu", "auto"):
            raise BlobcastError(f"unknown device {device!r}; use cpu, gpu or auto")
        available = []
        if self.engine_name == "onnxruntime" and device != "cpu":
            import onnxruntime

            available = onnxruntime.get_available_providers()
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device == "gpu":
            runtime = (f"onnxruntime {installed_runtime()} has no CUDA execution provider"
                       if self.engine_name == "onnxruntime" else "onnxruntime is not installed")
            raise BlobcastError(f"--device gpu: {runtime}; install onnxruntime-gpu on a machine "
                                "with an NVIDIA GPU, or use --device cpu", self.path)
        return ["CPUExecutionProvider"]

    def _what_runs(self, model, keep_all: bool) -> list:
        """The output names to fetch, `model` changed in place: every value an
        output with keep_all, then reduced to what runs without custom nodes."""
        names = list(self.outputs)
        if keep_all:
            inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
            existing = set(names)
            for node in model.graph.node:
                for output in node.output:
                    if output and output not in existing and output in inferred:
                        model.graph.output.append(inferred[output])
                        existing.add(output)
                        names.append(output)
        blocked = blocked_outputs(model)
        if blocked:
            names = [name for name in names if name not in blocked]
            keep_outputs(model, names)
        return names

    def _graph_on_file(self, keep_all: bool):
        """The graph with each initializer's values as external data in the
        model file itself, and the output names."""
        model = onnx.ModelProto()
        model.CopyFrom(self._graph_only)
        model.ClearField("training_info")
        file_name = os.path.basename(self.path)
        for tensor in model.graph.initializer:
            if tensor.name in self._inline:
                tensor.raw_data = self._inline[tensor.name]
            elif tensor.name in self._raw_spans:
                _point_at_file(tensor, file_name, self._raw_spans[tensor.name])
        return model, self._what_runs(model, keep_all)

    def _full_model(self, keep_all: bool):
        """The model with its data in memory, and the output names."""
        model = onnx.load(self.path, load_external_data=True)
        return model, self._what_runs(model, keep_all)

    def _session(self, keep_all: bool):
        import onnxruntime

        stamped = next((o.version for o in self._graph_only.opset_import if o.domain in ("", "ai.onnx")),
                       None)
        newest = runtime_newest_opset(onnxruntime.__version__)
        if stamped is not None and newest is not None and stamped > newest:
            raise BlobcastError(f"onnxruntime {onnxruntime.__version__} runs opsets up to {newest}, "
                                f"and the model is opset {stamped}: write it with --opset {newest}, "
                                "or upgrade onnxruntime", self.path)

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 4  # failures are reported as blobcast errors
        # Pre-packed weights pay off over many runs; a check runs once,
        # and they cost a copy of the weights (VGG16: 3.0 s, 1.12 GB -> 1.4 s, 1.0 GB).
        options.add_session_config_entry("session.disable_prepacking", "1")
        levels = onnxruntime.GraphOptimizationLevel
        # keep_all: every value as the graph states it, none fused away. Else
        # no layout changes (ORT_ENABLE_ALL's blocked convolution weights are
        # copies: VGG16-size, 0.17 s and 60 MB more for a single run).
        options.graph_optimization_level = (levels.ORT_DISABLE_ALL if keep_all
                                            else levels.ORT_ENABLE_EXTENDED)
        if self.in_place:
            model, names = self._graph_on_file(keep_all)
            options.add_session_config_entry(_FOLDER_KEY, os.path.dirname(os.path.abspath(self.path)))
            source = model.SerializeToString()
        elif keep_all or self.uncomputed:
            if self.external:  # this onnxruntime finds external data only beside a file
                raise BlobcastError("every blob of a model with external data cannot be kept with "
                                    "onnxruntime before 1.21; compare outputs only" if keep_all else
                                    "a model with external data is run whole by onnxruntime before "
                                    "1.21, and its custom nodes cannot run", self.path)
            model, names = self._full_model(keep_all)
            source = model.SerializeToString()
        else:
            names, source = list(self.outputs), self.path  # onnxruntime reads the file itself
        return onnxruntime.InferenceSession(source, options, providers=self.providers), names

    def forward(self, inputs: dict, keep_all: bool = False, tolerate_missing: bool = True) -> dict:
        """The outputs (every value with keep_all) that do not depend on a custom node."""
        feeds = {k: np.asarray(v) for k, v in inputs.items()}
        try:
            if self.engine_name == "onnxruntime":
                session, names = self._session(keep_all)
                return dict(zip(names, session.run(names, feeds)))
            from onnx.reference import ReferenceEvaluator

            model, names = self._full_model(keep_all)
            return dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))
        except BlobcastError:
            raise
        except Exception as error:  # onnxruntime and the evaluator raise their own types
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise BlobcastError(f"{self.engine_name} could not run the model: {message}",
                                self.path) from error
