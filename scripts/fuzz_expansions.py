"""Fuzz the expansions a small file can ask for: modular nets (nesting,
fan-out, parameters that grow as they are passed on) and ONNX files (module
functions inlined, constants folded). Each generated file is run by
`blobcast inspect` in a child process under an address-space limit and a
time limit: it must read, or be refused in one line with exit 2, within both.

    python scripts/fuzz_expansions.py --examples 200       # a longer run
    python scripts/fuzz_expansions.py --examples 20 --seed 7

The test suite runs a few examples of each kind (tests/project/test_bounds.py).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET = "256M"
MEMORY_LIMIT = 1536 * 2**20  # the budget plus the interpreter, onnx, onnxruntime and NumPy
SECONDS = 120  # an ONNX graph at the 200,000-node limit imports in about a minute on a busy machine
INPUT = ('layer { name: "data" type: "Input" top: "data" '
         'input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }')


@dataclass
class Outcome:
    code: int | None  # None: no answer in time
    stderr: str

    def problem(self) -> str | None:
        lines = self.stderr.strip().splitlines()
        if self.code is None:
            return f"no answer in {SECONDS} s"
        if self.code not in (0, 2):
            return f"exit {self.code}: {self.stderr.strip()[-400:]}"
        if "Traceback" in self.stderr or "unexpected" in self.stderr:
            return f"not one clean line: {self.stderr.strip()[-400:]}"
        if self.code == 2 and len(lines) != 1:
            return f"{len(lines)} lines for one failure: {self.stderr.strip()[-400:]}"
        return None


def run_inspect(path: str) -> Outcome:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    try:
        done = subprocess.run([sys.executable, "-m", "blobcast", "inspect", path, "--memory-budget", BUDGET],
                              cwd=ROOT, capture_output=True, text=True, timeout=SECONDS, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return Outcome(None, "")
    return Outcome(done.returncode, done.stderr)


# -- modular nets ----------------------------------------------------------------------------

@st.composite
def modular_nets(draw) -> str:
    """Modules M0..Mn, each holding a few in-place ReLUs and instances of
    later modules, passing a parameter on as it is or repeated."""
    count = draw(st.integers(1, 8))
    modules = []
    for k in range(count):
        relus = draw(st.integers(0, 3))
        body = [f'layer {{ name: "r{j}" type: "ReLU" bottom: "x" top: "x" }}' for j in range(relus)]
        if k + 1 < count:
            for j in range(draw(st.integers(0, 40))):
                target = draw(st.integers(k + 1, count - 1))
                passed = draw(st.sampled_from(["${v}", "${v} ${v}", "${v}${v}${v}", "a", "${v}_1"]))
                body.append(f'layer {{ name: "i{j}" module: "M{target}" bottom: "x" top: "x" '
                            f'module_param {{ key: "v" value: "{passed}" }} }}')
        if draw(st.booleans()):  # the parameter in a setting: substituted text grows with it
            body.append('layer { name: "s" type: "ReLU" bottom: "x" top: "x" include { stage: "${v}" } }')
        modules.append(f'module {{ name: "M{k}" input: "x" output: "x" param {{ name: "v" }} '
                       + " ".join(body) + " }")
    instances = [f'layer {{ name: "top{j}" module: "M0" bottom: "data" top: "data" '
                 f'module_param {{ key: "v" value: "{draw(st.sampled_from(["a", "abcdefgh" * 8]))}" }} }}'
                 for j in range(draw(st.integers(1, 30)))]
    return "\n".join([INPUT, *modules, *instances]) + "\n"


# -- ONNX: module functions and constant folding -----------------------------------------------

def module_calls(body_nodes: int, calls: int, name_length: int = 1, call_names=None):
    """A chain of CALLS calls of one module function of BODY_NODES ReLUs, as
    blobcast writes module instances (domain ai.blobcast.module, a names attribute)."""
    from onnx import TensorProto, helper

    domain = "ai.blobcast.module"
    body = [helper.make_node("Relu", ["in0" if k == 0 else f"v{k}"],
                             ["out0" if k == body_nodes - 1 else f"v{k + 1}"], name=f"n{k}")
            for k in range(body_nodes)]
    function = helper.make_function(domain, "M", ["in0"], ["out0"], body, [helper.make_opsetid("", 13)],
                                    attributes=["names"])
    call_names = call_names or (lambda k: f"{k}" + "n" * name_length)
    nodes = [helper.make_node("M", ["x" if k == 0 else f"y{k - 1}"], [f"y{k}"], name=call_names(k),
                              domain=domain, names="{}") for k in range(calls)]
    graph = helper.make_graph(nodes, "calls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(f"y{calls - 1}", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(domain, 1)])
    model.ir_version = 8
    return model


def filled(name: str, shape: list[int], integer: bool = False) -> list:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    kind = TensorProto.INT64 if integer else TensorProto.FLOAT
    return [helper.make_node("Constant", [], [name + "_shape"],
                             value=numpy_helper.from_array(np.asarray(shape, np.int64), name + "_shape")),
            helper.make_node("ConstantOfShape", [name + "_shape"], [name],
                             value=helper.make_tensor(name + "_value", kind, [1], [0]))]


def with_output(nodes: list, output: str):
    """A model of constant-making NODES whose OUTPUT is a graph output, beside
    a plain x + x (so the model has an input)."""
    from onnx import TensorProto, helper

    nodes = [*nodes, helper.make_node("Add", ["x", "x"], ["xx"])]
    plane = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])
    graph = helper.make_graph(nodes, "constants", [plane],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("xx", TensorProto.FLOAT, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def folded(op: str, size: int, fan: int, side: int, kernel: int):
    """A constant made by OP from ConstantOfShape values: a Gather of fan * 1000
    rows, a Concat of one input FAN times, a Tile, a KERNEL-wide convolution."""
    from onnx import helper

    if op == "Gather":
        nodes = [*filled("data", [1, size]), *filled("rows", [fan * 1000], integer=True),
                 helper.make_node("Gather", ["data", "rows"], ["big"], axis=0)]
    elif op == "Concat":
        nodes = [*filled("data", [size]), helper.make_node("Concat", ["data"] * fan, ["big"], axis=0)]
    elif op == "Tile":
        nodes = [*filled("data", [size]), *filled("reps", [1], integer=True),
                 helper.make_node("Add", ["reps", "reps"], ["reps2"]),
                 helper.make_node("Tile", ["data", "reps2"], ["big"])]
    else:  # Conv
        nodes = [*filled("image", [1, 1, side, side]), *filled("kernel", [1, 1, kernel, kernel]),
                 helper.make_node("Conv", ["image", "kernel"], ["big"], pads=[kernel // 2] * 4)]
    return with_output(nodes, "big")


onnx_models = st.one_of(
    st.builds(module_calls, st.integers(1, 3000), st.integers(1, 2000), st.sampled_from([1, 100, 20_000])),
    st.builds(folded, st.sampled_from(["Gather", "Concat", "Tile", "Conv"]),
              st.sampled_from([1, 1024, 1_000_000]), st.integers(1, 2000),
              st.sampled_from([8, 500, 3000]), st.sampled_from([1, 3, 15, 61])))


# -- the runs ----------------------------------------------------------------------------------

def _check(write, folder: str) -> None:
    path = write(folder)
    outcome = run_inspect(path)
    problem = outcome.problem()
    assert problem is None, f"{os.path.basename(path)} ({os.path.getsize(path)} bytes): {problem}"


def fuzz(examples: int, random_seed: int = 0) -> None:
    """Run `examples` modular nets and `examples` ONNX files; raise on the first
    that hangs, runs out of memory or fails without one clean line."""
    import onnx

    # no shrinking: each example is a child process of seconds; the first failure is reported as found
    options = settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                       suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
                       print_blob=False)
    with tempfile.TemporaryDirectory() as folder:
        def modular(text: str) -> str:
            path = os.path.join(folder, "net.prototxt")
            with open(path, "w") as handle:
                handle.write(text)
            return path

        def onnx_file(model) -> str:
            path = os.path.join(folder, "model.onnx")
            onnx.save(model, path)
            return path

        seed(random_seed)(options(given(modular_nets())(lambda text: _check(lambda _: modular(text),
                                                                             folder))))()
        seed(random_seed)(options(given(onnx_models)(lambda model: _check(lambda _: onnx_file(model),
                                                                         folder))))()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="examples of each kind")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    fuzz(arguments.examples, arguments.seed)
    print(f"{2 * arguments.examples} files: each read or refused in one line, within "
          f"{SECONDS} s and {MEMORY_LIMIT // 2**20} MiB")


if __name__ == "__main__":
    main()
