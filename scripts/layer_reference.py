"""Write docs/layers.md, the per-layer reference, from the layer registry.

For every type blobcast knows: where it comes from, its settings field, its
blob count, what the engine does with it, the ONNX it is written as (the op
types its exporter writes, read from the exporter's code), and what the
engine's results were checked against (the recorded nets in fixtures/ that
hold the type).

    python scripts/layer_reference.py           # write the page
    python scripts/layer_reference.py --check   # exit 1 when the page is stale
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import textwrap
from pathlib import Path

import onnx

import blobcast
import blobcast.converters.onnx_export  # noqa: F401  (registers every exporter)
from blobcast.converters.onnx_ops.registry import EXPORTERS, FUNCTION_EXPORTS
from blobcast.layers import SPECS
from blobcast.layers.base import LayerSpec
from blobcast.targets import BVLC_TYPES, TARGETS

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "layers.md"
ONNX_OPS = {schema.name for schema in onnx.defs.get_all_schemas()}

# Nets whose every blob a Caffe build recorded (fixtures/caffe/MANIFEST.md):
# the tests run the engine on them and compare blob by blob.
RECORDED = {
    "BVLC Caffe": ["zoo/zoo_deploy.prototxt", "lenet/lenet_deploy.prototxt",
                   "shared/shared_deploy.prototxt", "slash/slash_deploy.prototxt",
                   "slash/slash_nested_deploy.prototxt", "v1/lenet_v1.prototxt"],
    "the SSD fork": ["ssd/synth_a.prototxt", "ssd/synth_b_detout.prototxt"],
}
# Real third-party models (fixtures/real), run against OpenCV and onnxruntime.
REAL_MODELS = {"yufacedetectnet": "yufacedetectnet-open-v1.prototxt",
               "yoloface-500k": "yoloface-500k-v2.prototxt"}


def _types_in(path: Path) -> set[str]:
    return {layer.type for layer in blobcast.load(path).layers}


def checked_against() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for who, nets in RECORDED.items():
        for type_name in set().union(*(_types_in(ROOT / "fixtures" / "caffe" / net) for net in nets)):
            found.setdefault(type_name, []).append(f"{who}'s recorded blobs")
    for folder, net in REAL_MODELS.items():
        for type_name in _types_in(ROOT / "fixtures" / "real" / folder / net):
            found.setdefault(type_name, []).append(f"real model `{folder}`")
    return found


def _called_ops(function, seen: set) -> list[str]:
    """The op types a handler writes (string literals naming an ONNX op passed
    first to a call), following the converters' functions it calls."""
    function = inspect.unwrap(function)
    if function in seen or not inspect.isfunction(function):
        return []
    seen.add(function)
    closure = {name: cell.cell_contents for name, cell in
               zip(function.__code__.co_freevars, function.__closure__ or ())}
    definition = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    ops: list[str] = []  # the body only: a decorator names the Caffe type, not an op
    for node in (inner for statement in definition.body for inner in ast.walk(statement)):
        if not isinstance(node, ast.Call):
            continue
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Constant) and first.value in ONNX_OPS:
            ops.append(first.value)  # g.node("Conv", ...) and the step helpers' s("Conv", ...)
        elif isinstance(first, ast.Name) and closure.get(first.id) in ONNX_OPS:
            ops.append(closure[first.id])
        if isinstance(node.func, ast.Name):
            helper = function.__globals__.get(node.func.id) or closure.get(node.func.id)
            if inspect.isfunction(helper) and helper.__module__.startswith("blobcast.converters"):
                ops.extend(_called_ops(helper, seen))
    return list(dict.fromkeys(ops))


def onnx_form(type_name: str) -> str:
    handler = EXPORTERS.get(type_name)
    if handler is None:
        return "custom node (`ai.blobcast`)"
    ops = ", ".join(_called_ops(handler, set())) or "none (a constant or a rename)"
    if type_name in FUNCTION_EXPORTS:
        return f"function (`ai.blobcast.caffe`): {ops}"
    return ops


def origin(type_name: str, spec) -> str:
    declared = getattr(spec, "origin", None)
    if isinstance(declared, dict):
        declared = declared.get(type_name)
    if declared:
        return declared
    if type_name in BVLC_TYPES:
        return "BVLC Caffe" if type_name in TARGETS["caffe-1.0"].types else "BVLC Caffe master (after 1.0)"
    return "?"


def engine_role(spec) -> str:
    if spec.runnable:
        return "runs"
    return {"input": "input (the net's input)", "data": "data layer: its tops are inputs",
            "loss": "loss or evaluation: reported, not run"}.get(spec.role, "read and written, not run")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render() -> str:
    checks = checked_against()
    lines = [
        "# Layer reference",
        "",
        "<!-- Generated by scripts/layer_reference.py from the layer registry; do not edit. -->",
        "",
        "Every layer type blobcast knows, from its registry (`src/blobcast/layers/`). "
        "**from**: the Caffe it comes from. **settings**: the LayerParameter field of its settings. "
        "**blobs**: how many weight blobs a layer holds. **engine**: what `run` and `verify` do with it. "
        "**ONNX**: the op types its exporter writes (some only for some settings); a *function* is a "
        "model-local function of standard ops that imports back as the same layer, and a "
        "*custom node* keeps the layer for a round trip. **checked against**: the recorded nets in "
        "`fixtures/` the engine's results are compared with, blob for blob; the engine's arithmetic "
        "follows Caffe's, within float32 rounding of the order of sums (see [verify](commands/verify.md) "
        "for the measured differences) unless the last column says otherwise.",
        "",
        "| type | from | settings | blobs | engine | ONNX | checked against; exactness |",
        "|---|---|---|---|---|---|---|",
    ]
    for type_name in sorted(SPECS, key=str.lower):
        spec = SPECS[type_name]
        by_settings = spec.blob_count.__func__ is not LayerSpec.blob_count.__func__
        blobs = "varies" if spec.blobs is None else "by settings" if by_settings else spec.blobs
        exactness = getattr(spec, "exactness", None)
        checked = "; ".join(checks.get(type_name, [])) or "—"
        if exactness:
            checked = f"{checked}; {exactness}" if checked != "—" else exactness
        row = [f"`{type_name}`", origin(type_name, spec),
               f"`{spec.settings}`" if spec.settings else "—", blobs, engine_role(spec),
               onnx_form(type_name) if spec.runnable or type_name in EXPORTERS else "—", checked]
        lines.append("| " + " | ".join(_cell(value) for value in row) + " |")
    lines += ["", f"{len(SPECS)} types, {sum(spec.runnable for spec in SPECS.values())} of them run by "
              "the engine. A type not listed is kept as it is and shown, and the engine computes "
              "every output that does not need it ([engine](engine.md#layers-blobcast-cannot-run)).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when docs/layers.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python scripts/layer_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
