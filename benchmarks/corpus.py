"""Real public Caffe files (fixtures/real/, each folder with its SOURCE.md)
taken through what a user does with them, each step a fresh `blobcast`
process as a user runs it: inspect, run, convert to .caffemodel.h5, convert
to ONNX (each conversion with its check), verify (the file against its ONNX
conversion).

A net definition without weights gets seeded random ones first (its layers'
fillers, written to a .caffemodel beside the outputs): the steps then check
that blobcast reads, converts, runs and exports the architecture. Random
weights make activations grow to thousands or millions through a deep net, so
the checks' absolute tolerance is then 1e-5 of the largest output `run` gave
(1e-4 for trained weights). Each
entry gives the inputs a step needs where the file cannot say (the image
size of a training snapshot's database, real ROIs for an ROI net, the shape
of a Python layer's top).

    python benchmarks/corpus.py [--json] [--only TEXT] [--keep DIR] [--timeout S]

Prints a markdown table (or JSON with --json): one row per file, one
column per step: ok, a failure's one-line reason, or "-" where the step
does not apply.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "fixtures" / "real"
STEPS = ("inspect", "h5", "onnx", "run", "verify")


@dataclass
class Entry:
    path: str                       # under fixtures/real
    inputs: dict = field(default_factory=dict)   # name -> "d1,d2,.." or an .npy maker's name
    shapes: dict = field(default_factory=dict)   # tops of layers blobcast cannot size (--shape)
    prototxt: str | None = None     # the definition to pair with a weights file
    solver: str | None = None       # a solver state's solver
    python: str | None = None       # the folder of its Python layers' modules (run with them)
    atol: str | None = None         # the checks' absolute tolerance (default: see check())
    note: str = ""                  # what is known about the file (shown in the table)

    @property
    def repo(self) -> str:
        source = (REAL / self.path).parent / "SOURCE.md"
        for line in source.read_text().splitlines():
            if line.startswith("- Repository:"):
                return line.split(":", 1)[1].strip().split(" ")[0]
        return ""


def _rois(folder: Path, rank: int = 2) -> str:
    """Real ROIs (batch index, x1, y1, x2, y2) inside a 224 x 224 image, as an
    N x 5 array (rank 2) or N x 5 x 1 x 1 (rank 4, R-FCN's MATLAB nets)."""
    path = folder / "rois.npy"
    rois = np.array([[0, 10, 10, 100, 120], [0, 0, 0, 223, 223], [0, 50.5, 60, 70, 90]], np.float32)
    np.save(path, rois.reshape(rois.shape + (1,) * (rank - 2)))
    return str(path)


CORPUS = [
    Entry("cifar10-full-snapshot/cifar10_full_iter_10000.caffemodel", {"data": "1,3,32,32"},
          note="2014 V1 `caffe train` snapshot, TRAIN-only Data layer"),
    Entry("cifar10-full-snapshot/cifar10_full_iter_10000.solverstate", {"data": "1,3,32,32"},
          solver="cifar10-full-snapshot/cifar10_full_solver.prototxt",
          note="V1 solver state: legacy 4-D history shapes"),
    Entry("cifar10-full-snapshot/cifar10_full_train_test.prototxt", {"data": "1,3,32,32"},
          note="V1 train_test (DATA layers in both phases)"),
    Entry("lenet-snapshot/lenet_iter_10000.caffemodel", {"data": "1,1,28,28"},
          note="`caffe train` snapshot, TRAIN-only Data layer"),
    Entry("lenet-snapshot/lenet.prototxt", {}, note="deploy definition"),
    Entry("shufflenet/shufflenet_1x_g3_deploy.prototxt", note="ConvolutionDepthwise without group"),
    Entry("shufflenet/shufflenet_v2_1x_deploy.prototxt"),
    Entry("pspnet/pspnet50_ADE20K_473.prototxt", note="PSPNet BN, Interp"),
    Entry("pspnet/pspnet101_VOC2012_473.prototxt", note="PSPNet BN, Interp"),
    Entry("icnet/icnet_cityscapes.prototxt", note="PSPNet BN, Interp"),
    Entry("enet/enet_deploy_final.prototxt", {"data": "1,3,128,256"},
          note="SegNet BN, SegNet Upsample"),
    Entry("enet/enet_deploy.prototxt", {"data": "1,3,128,256"},
          note="27 Python layers (module not shipped)"),
    Entry("segnet/segnet_basic_inference.prototxt", {"data": "1,3,360,480"},
          note="SegNet BN, Upsample, DenseImageData (CamVid's 360 x 480)"),
    Entry("segnet/bayesian_segnet_inference.prototxt", {"data": "1,3,360,480"},
          note="Monte Carlo dropout at test time (dropout_param.sample_weights_test, a fork "
               "field): random by design, so run refuses it, naming the field"),
    Entry("deeplab-v2/deeplab_largeFOV_test.prototxt",
          note="a template: DeepLab's run script fills ${NUM_LABELS} and ${EXP}; as stored it is "
               "no prototxt, and Caffe refuses it too"),
    Entry("deeplab-v2/deeplab_largeFOV_train.prototxt",
          note="a template (${...} placeholders), as above"),
    Entry("py-faster-rcnn/ZF_fast_rcnn_test.prototxt", {"rois": "rois"},
          note="ROIPooling, Dropout scale_train: false; real ROIs"),
    Entry("py-faster-rcnn/ZF_faster_rcnn_end2end_test.prototxt", shapes={"rois": "300,5"},
          note="Python proposal layer (module not shipped)"),
    Entry("py-rfcn/rfcn_resnet50_test_agnostic.prototxt", shapes={"rois": "300,5"},
          note="Python proposal layer, PSROIPooling"),
    Entry("rfcn/rfcn_resnet50_test.prototxt", {"rois": "rois4d"}, note="PSROIPooling; real ROIs"),
    Entry("intel-caffe/faster_rcnn_deploy.prototxt", shapes={"rois": "300,5"},
          note="Python proposal layer"),
    Entry("intel-caffe/alexnet_train_val_dummydata.prototxt", note="DummyData training net"),
    Entry("mobilenet-ssd/MobileNetSSD_deploy.prototxt", note="SSD layers"),
    Entry("mobilenet-ssd/MobileNetSSD_train.prototxt", {"data": "1,3,300,300"},
          note="AnnotatedData (SSD fork fields), MultiBoxLoss"),
    Entry("mobilenet-caffe/mobilenet_deploy.prototxt"),
    Entry("mobilenet-caffe/mobilenet_v2_deploy.prototxt"),
    Entry("depthwise-mobilenet/depthwised_mobilenet_deploy.prototxt", note="DepthwiseConvolution"),
    Entry("senet/SE-BN-Inception.prototxt", note="SE gating (two-bottom Scale)"),
    Entry("densenet/DenseNet_121.prototxt"),
    Entry("open-nsfw/open_nsfw_deploy.prototxt", note="Yahoo open_nsfw (CaffeOnSpark-trained)"),
    Entry("caffeonspark/lenet_memory_train_test.prototxt", note="CaffeOnSpark MemoryData"),
    Entry("caffeonspark/lenet_dataframe_train_test.prototxt", note="CaffeOnSpark MemoryData"),
    Entry("ultraface/RFB-320.caffemodel", prototxt="ultraface/RFB-320.prototxt",
          note="trained weights shipped"),
    Entry("ultraface/RFB-320.prototxt", note="definition alone"),
    Entry("pycaffe-python-layer/linreg.prototxt", shapes={"loss": "1"}, python="pycaffe-python-layer",
          note="Python layer (pyloss, shipped: run with --allow-python-layers)"),
]


def _blobcast(args: list[str], timeout: float) -> tuple[bool, str, float]:
    """(ok, the error's one line or the JSON output, seconds) of one CLI run."""
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "blobcast", *args, "--json"], capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        return True, done.stdout, seconds
    try:
        message = json.loads(done.stdout)["error"]
    except (json.JSONDecodeError, KeyError, TypeError):
        message = (done.stderr.strip().splitlines() or ["exit status %d" % done.returncode])[-1]
    return False, message.replace(str(ROOT) + "/", "").replace("\n", " "), seconds


def _input_args(entry: Entry, folder: Path) -> list[str]:
    args = []
    for name, value in entry.inputs.items():
        if value.startswith("rois"):
            value = _rois(folder, 4 if value == "rois4d" else 2)
        args += ["--input", f"{name}={value}"]
    return args


def _shape_args(entry: Entry) -> list[str]:
    return [arg for name, value in entry.shapes.items() for arg in ("--shape", f"{name}={value}")]


def _random_weights(entry: Entry, source: Path, folder: Path, inputs: list[str]) -> Path:
    """The definition with seeded random weights, as a .caffemodel."""
    import blobcast
    from blobcast.check import parse_input_spec
    from blobcast.engine.random_fill import fill_random_weights

    model = blobcast.load(source)
    shapes = {}
    for spec in inputs[1::2]:
        name, value = parse_input_spec(spec)
        shapes[name] = list(getattr(value, "shape", value))
    given = {name: [int(d) for d in value.split(",")] for name, value in entry.shapes.items()}
    fill_random_weights(model, shapes, seed=0, given_shapes=given)
    weights = folder / (source.stem + ".random.caffemodel")
    blobcast.save(model, weights)
    return weights


def _tolerance(run_output: str | None, random: bool) -> str:
    """The checks' absolute tolerance: 1e-4 for trained weights; with random
    weights, whose activations grow to thousands or millions through a deep
    net, 1e-5 of the largest output the run gave (float32 keeps ~7 digits)."""
    if not random:
        return "1e-4"
    largest = 1.0
    if run_output:
        for blob in json.loads(run_output).get("blobs", []):
            largest = max(largest, abs(blob.get("min") or 0), abs(blob.get("max") or 0))
    return f"{max(1e-4, 1e-5 * largest):.3g}"


def check(entry: Entry, folder: Path, timeout: float) -> dict:
    source = REAL / entry.path
    row = {"file": entry.path, "repo": entry.repo, "note": entry.note, "steps": {}, "seconds": {}}
    pair = ["--prototxt", str(REAL / entry.prototxt)] if entry.prototxt else []
    inputs = _input_args(entry, folder)

    def step(name, args):
        ok, out, seconds = _blobcast(args, timeout)
        row["steps"][name], row["seconds"][name] = ("ok" if ok else out), round(seconds, 2)
        return ok, out

    ok, out = step("inspect", ["inspect", str(source), *pair])
    if ok:
        report = json.loads(out)
        row["layers"] = len(report.get("layers", [])) or report.get("totals", {}).get("layers")
    weights = source
    if source.suffix in (".prototxt", ".pt") and not ok:
        row["steps"].update(dict.fromkeys(STEPS[1:], "-"))  # a definition that does not open
        return row
    if source.suffix in (".prototxt", ".pt"):
        try:
            weights = _random_weights(entry, source, folder, inputs)
            row["weights"] = "random"
        except Exception as error:  # noqa: BLE001  (recorded in the table)
            row["steps"]["h5"] = f"random weights: {type(error).__name__}: {error}".replace("\n", " ")
            return row
    else:
        row["weights"] = "file"
    state = source.suffix == ".solverstate"
    # run first: with random weights, its outputs' size sets the checks' tolerance
    python = ["--allow-python-layers", "--python-path", str(REAL / entry.python)] if entry.python else []
    ran, out = (False, None) if state else step("run", ["run", str(weights), *pair, *inputs, *python])
    atol = entry.atol or _tolerance(out if ran else None, row["weights"] == "random")
    row["atol"] = atol
    solver = ["--solver", str(REAL / entry.solver)] if entry.solver else []
    h5_suffix = ".solverstate.h5" if state else ".caffemodel.h5"
    step("h5", ["convert", str(weights), str(folder / (source.stem + h5_suffix)), *pair, *inputs,
                "--atol", atol, "--force"])
    onnx = folder / (source.stem + ".onnx")
    python_layers = bool(entry.shapes)
    onnx_ok, _ = step("onnx", ["convert", str(weights), str(onnx), *pair, *inputs, *solver,
                                *_shape_args(entry), "--atol", atol, "--force"]
                      + (["--no-verify"] if python_layers else []))
    if state:
        row["steps"]["run"] = row["steps"]["verify"] = "-"
        return row
    if onnx_ok and not python_layers:
        step("verify", ["verify", str(weights), str(onnx), *pair, *inputs, "--atol", atol])
    else:
        row["steps"]["verify"] = "-" if python_layers else "no ONNX file"
    return row


def _failure(row: dict) -> str:
    """The first failed step and its one line, its temporary paths left out."""
    for name in STEPS:
        value = row["steps"].get(name, "-")
        if value not in ("ok", "-"):
            value = re.sub(r"\S*/(\d\d)/", "", value).replace("|", "/")
            return f"{name}: {value[:160]}"
    return ""


def markdown(rows: list[dict]) -> str:
    lines = ["| file | repository | layers | weights | " + " | ".join(STEPS) + " | notes | first failure |",
             "|---" * (len(STEPS) + 6) + "|"]
    for row in rows:
        cells = [value if value in ("ok", "-") else "FAIL"
                 for value in (row["steps"].get(name, "-") for name in STEPS)]
        lines.append(f"| `{row['file']}` | {row['repo']} | {row.get('layers', '')} | "
                     f"{row.get('weights', '')} | " + " | ".join(cells) +
                     f" | {row['note']} | {_failure(row)} |")
    passed = sum(all(row["steps"].get(name, "-") in ("ok", "-") for name in STEPS) for row in rows)
    lines.append("")
    lines.append(f"{passed} of {len(rows)} files pass every step that applies; "
                 f"{len({row['repo'] for row in rows})} repositories.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    parser.add_argument("--only", help="only the files whose path contains TEXT")
    parser.add_argument("--keep", help="write the outputs to DIR (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per step")
    options = parser.parse_args(argv)
    entries = [e for e in CORPUS if not options.only or options.only in e.path]
    with tempfile.TemporaryDirectory() as temporary:
        base = Path(options.keep or temporary)
        rows = []
        for index, entry in enumerate(entries):
            folder = base / f"{index:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            rows.append(check(entry, folder, options.timeout))
            print(f"{entry.path}: " + ", ".join(f"{k} {'ok' if v == 'ok' else v if v == '-' else 'FAIL'}"
                                                for k, v in rows[-1]["steps"].items()), file=sys.stderr)
    print(json.dumps(rows, indent=2) if options.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
