"""The model x target table of docs/targets.md: each torch export in
fixtures/torch converted to Caffe for each target, then run by blobcast's
engine and (for opencv) OpenCV 4 on the written files. Each cell is the
largest difference from onnxruntime's output on the original ONNX file,
divided by the range of that output; or why the net does not fit.

    python scripts/onnx_target_table.py [NAME_FILTER]
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime

import blobcast
from blobcast.engine import Net
from blobcast.errors import BlobcastError, BlobcastWarning

TORCH = Path(__file__).resolve().parents[1] / "fixtures" / "torch"
TARGETS = ["opencv", "caffe", "caffe-1.0", "rknn", "nnie", "ncsdk", "tidl"]


def _spread_error(got, expected) -> float:
    return float(np.abs(np.asarray(got) - expected).max() / (expected.max() - expected.min()))


def cell(source: Path, target: str, folder: str) -> str:
    x = np.random.default_rng(11).standard_normal((1, 3, 64, 64)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": x})[0]
    out = Path(folder) / f"{source.stem}_{target}.caffemodel"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BlobcastWarning)
            blobcast.convert(source, out, target=target, overwrite=True)
    except BlobcastError as error:
        problem = error.problem
        if "has no" in problem:  # the first layer type the target lacks
            return "no " + problem.split(" has no ")[1].split(" layer")[0]
        return problem[:60]
    model = blobcast.load(out)
    text = f"{_spread_error(Net(model).forward({'input': x})['logits'], expected):.1e}"
    if target == "opencv":
        from blobcast.converters.opencv_check import run_in_opencv

        got = run_in_opencv(model, str(out), {"input": x}, ["logits"])["logits"]
        text += f" / cv {_spread_error(got, expected):.1e}"
    return text


def main(name_filter: str = "") -> None:
    print("| export | " + " | ".join(TARGETS) + " |")
    print("|---|" + "---|" * len(TARGETS))
    with tempfile.TemporaryDirectory() as folder:
        for source in sorted(p for p in TORCH.glob("*.onnx") if name_filter in p.stem):
            cells = [cell(source, target, folder) for target in TARGETS]
            print(f"| {source.stem} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
