"""What carrying training state in ONNX costs: a ResNet-50-size (or other)
training net with an Adam state (two history tensors per parameter).

Each row times one operation (median of --runs, in this process) beside a
reference run of the same size, and gives the peak of memory NumPy and Python
allocate during one run (tracemalloc; files mapped in place are not counted):

- state -> ONNX with its training step, against the plain ONNX export of the
  same weights (both without the forward check, which is the same for both);
- ONNX -> .solverstate + .caffemodel, against .solverstate -> .solverstate and
  .caffemodel -> .caffemodel (what restoring costs without ONNX);
- blobcast's executor running one step, against the same Adam update written
  as a handful of NumPy statements on the arrays.

    python benchmarks/training_state.py [--nets ResNet-50,MobileNet-v1] [--runs 5] [--json]
"""

from __future__ import annotations

import os
import sys
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nets import NETS, benchmark_parser, chosen_nets, measure_and_report, median_seconds, with_weights  # noqa: E402

import blobcast  # noqa: E402
from blobcast.solver import SolverState, learnable_slots  # noqa: E402

SOLVER = ('type: "Adam" base_lr: 0.001 momentum: 0.9 momentum2: 0.999 delta: 1e-8 '
          'lr_policy: "step" gamma: 0.1 stepsize: 100000 weight_decay: 0.0001\n')


def training_files(name: str, folder: str) -> dict:
    """The net with a label input and a loss, its weights, an Adam state, the solver."""
    model = with_weights(NETS[name]())
    last = model.layers[-1].tops[0]
    label = blobcast.Layer("label", "Input", tops=["label"])
    label.spec.mutable("input_param").shape.add(dim=[1])
    model.layers.insert(1, label)
    model.layers.append(blobcast.Layer("loss", "SoftmaxWithLoss", bottoms=[last, "label"],
                                       tops=["loss"]))
    rng = np.random.default_rng(1)
    slots = learnable_slots(model)
    history = [rng.uniform(0, 1e-3, s.shape).astype(np.float32) for _ in range(2) for s in slots]
    paths = {kind: os.path.join(folder, f"{name}_iter_1000.{kind}")
             for kind in ("caffemodel", "solverstate")}
    blobcast.save(model, paths["caffemodel"])
    blobcast.save(SolverState(iter=1000, learned_net=os.path.basename(paths["caffemodel"]),
                              history=history), paths["solverstate"])
    paths["solver"] = os.path.join(folder, "solver.prototxt")
    with open(paths["solver"], "w") as handle:
        handle.write(SOLVER)
    paths["gradients"] = {f"{s.layer}/param{s.index}": rng.normal(0, 1e-2, s.shape).astype(np.float32)
                          for s in slots}
    return paths


def numpy_adam(values: dict, gradients: dict, state: dict) -> None:
    """The reference: Caffe's Adam step on the arrays, L2 decay included."""
    rate = np.float32(0.001 * np.sqrt(1 - 0.999 ** 1001) / (1 - 0.9 ** 1001))
    for name, grad in gradients.items():
        x = values[name]
        g = grad + np.float32(1e-4) * x
        m, v = state[name]
        m = np.float32(0.9) * m + np.float32(0.1) * g
        v = np.float32(0.999) * v + np.float32(0.001) * (g * g)
        values[name] = x - rate * (m / (np.sqrt(v) + np.float32(1e-8)))
        state[name] = (m, v)


def timed(run, runs: int) -> tuple[float, int]:
    """The median time, then the peak of what one more run allocates."""
    seconds = median_seconds(run, runs)
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak


def measure(name: str, folder: str, runs: int) -> list[dict]:
    files = training_files(name, folder)
    onnx_path = os.path.join(folder, f"{name}.onnx")
    plain_path = os.path.join(folder, f"{name}_plain.onnx")
    back = {kind: os.path.join(folder, f"back_{name}.{kind}") for kind in ("solverstate", "caffemodel")}
    same = {kind: os.path.join(folder, f"same_{name}.{kind}") for kind in ("solverstate", "caffemodel")}

    def to_onnx():
        blobcast.convert(files["solverstate"], onnx_path, solver=files["solver"], overwrite=True,
                         forward_check=False)

    def plain_onnx():
        blobcast.convert(files["caffemodel"], plain_path, overwrite=True, forward_check=False)

    def from_onnx():
        blobcast.convert(onnx_path, back["solverstate"], weights=back["caffemodel"], overwrite=True,
                         forward_check=False)

    def copies():
        blobcast.convert(files["solverstate"], same["solverstate"], overwrite=True)
        blobcast.convert(files["caffemodel"], same["caffemodel"], overwrite=True, forward_check=False)

    to_onnx()
    model = blobcast.load(onnx_path)
    parameters = sum(ref.blob.data.size for ref in model.owned_params())
    values = {f"{s.layer}/param{s.index}": model[s.layer].blobs[s.index].data.numpy().copy()
              for s in learnable_slots(model)}
    history = model.training.state.history
    n = len(values)
    adam_state = {key: (history[i].numpy(), history[n + i].numpy()) for i, key in enumerate(values)}

    def executor():
        blobcast.training_step(onnx_path, files["gradients"])

    def reference_step():
        numpy_adam(dict(values), files["gradients"], dict(adam_state))

    rows = []
    for what, ours, reference, label in (
            ("state -> onnx", to_onnx, plain_onnx, "plain export"),
            ("onnx -> state + weights", from_onnx, copies, "state + weights copies"),
            ("executor step", executor, reference_step, "NumPy Adam")):
        seconds, peak = timed(ours, runs)
        ref_seconds, ref_peak = timed(reference, runs)
        rows.append({"net": name, "parameters": parameters, "operation": what, "seconds": seconds,
                     "peak_bytes": peak, "reference": label, "reference_seconds": ref_seconds,
                     "reference_peak_bytes": ref_peak, "ratio": seconds / ref_seconds})
    return rows


def main() -> None:
    parser = benchmark_parser(__doc__, nets="ResNet-50,MobileNet-v1")
    args = parser.parse_args()
    names = chosen_nets(parser, args.nets)
    header = (f"{'net':<10} {'operation':<24} {'time':>8} {'peak':>9}   {'reference':<22} "
              f"{'time':>8} {'peak':>9} {'ratio':>6}")

    def line(r):
        return (f"{r['net']:<10} {r['operation']:<24} {r['seconds']:>7.3f}s "
                f"{r['peak_bytes'] / 2**20:>7.1f}MB   {r['reference']:<22} "
                f"{r['reference_seconds']:>7.3f}s {r['reference_peak_bytes'] / 2**20:>7.1f}MB "
                f"{r['ratio']:>6.2f}")

    measure_and_report(names, lambda name, folder: measure(name, folder, args.runs), header, line,
                       args.json, {"runs": args.runs, "medians": True}, "blobcast-training-")


if __name__ == "__main__":
    main()
