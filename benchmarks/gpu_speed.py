"""GPU forward-pass speed: blobcast's engine on CuPy against PyTorch eager
(cuDNN, fp32, TF32 off), side by side on the same nets and weights.

The five nets of benchmarks/nets.py run in blobcast and through a small
PyTorch interpreter of the same Caffe layers (torch.nn.functional), at batch
1, 8, 32 and 64; calls alternate between the two, each synchronised; the
ratio is the median of the per-pair ratios. Peak GPU memory of each side is
printed beside it, and the logits are compared.

Needs a GPU with CuPy (blobcast[gpu-cuda12|13]) and PyTorch (a benchmark-only
dependency); without them it says so and exits 0. `--device cpu` runs both
sides on the CPU instead: a check of the interpreter, not a benchmark.

    python benchmarks/gpu_speed.py [--runs 10] [--nets ResNet-50,VGG16]
        [--batches 1,8,32,64] [--device gpu|cpu] [--json]
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
from nets import benchmark_parser, chosen_nets, measure_and_report, write_net

import blobcast
from blobcast.engine import Net


def torch_forward(torch, model: blobcast.Model, weights: dict, x):
    """Run the Caffe net's layers with torch.nn.functional (in-place tops rebind)."""
    functional = torch.nn.functional
    blobs = {"data": x}
    for layer in model.layers:
        if layer.type == "Input":
            continue
        p, bottoms = layer.type_params, [blobs[name] for name in layer.bottoms]
        w = weights.get(layer.name, [])
        if layer.type == "Convolution":
            stride, pad = (p.stride[0] if p.stride else 1), (p.pad[0] if p.pad else 0)
            y = functional.conv2d(bottoms[0], w[0], w[1] if len(w) > 1 else None, stride, pad, 1, p.group)
        elif layer.type == "BatchNorm":
            factor = float(w[2].reshape(-1)[0])
            factor = 0.0 if factor == 0 else 1.0 / factor
            y = functional.batch_norm(bottoms[0], w[0] * factor, w[1] * factor, eps=p.eps)
        elif layer.type == "Scale":
            shape = (1, -1, 1, 1) if bottoms[0].dim() == 4 else (1, -1)
            y = bottoms[0] * w[0].reshape(shape) + (w[1].reshape(shape) if len(w) > 1 else 0)
        elif layer.type == "ReLU":
            y = functional.relu(bottoms[0])
        elif layer.type == "Pooling":
            if p.global_pooling:
                y = bottoms[0].mean(dim=(2, 3), keepdim=True)
            else:
                kernel, stride, pad = p.kernel_size, p.stride, p.pad
                size = bottoms[0].shape[2]
                out = -(-(size + 2 * pad - kernel) // stride) + 1  # Caffe rounds up
                if (out - 1) * stride >= size + pad:
                    out -= 1
                extra = max((out - 1) * stride + kernel - size - 2 * pad, 0)
                padded = functional.pad(bottoms[0], (pad, pad + extra, pad, pad + extra),
                                        value=float("-inf") if p.pool == "MAX" else 0.0)
                pool = functional.max_pool2d if p.pool == "MAX" else functional.avg_pool2d
                y = pool(padded, kernel, stride)
        elif layer.type == "LRN":
            y = functional.local_response_norm(bottoms[0], p.local_size, p.alpha, p.beta, 1.0)
        elif layer.type == "Eltwise":
            y = bottoms[0] + bottoms[1]
        elif layer.type == "Concat":
            y = torch.cat(bottoms, dim=1)
        elif layer.type == "InnerProduct":
            y = functional.linear(bottoms[0].flatten(1), w[0], w[1] if len(w) > 1 else None)
        elif layer.type == "Softmax":
            y = torch.softmax(bottoms[0], dim=1)
        else:
            raise SystemExit(f"the PyTorch interpreter has no {layer.type} layer")
        blobs[layer.tops[0]] = y
    return blobs


def _synchronise(xp, torch, device: str) -> None:
    if device == "gpu":
        xp.cuda.Stream.null.synchronize()
        torch.cuda.synchronize()


def measure(name: str, folder: str, batches, runs: int, device: str, torch) -> list[dict]:
    prototxt, weights_path = write_net(name, folder)
    model = blobcast.load(weights_path, prototxt=prototxt)
    net = Net(model, device=device)
    xp = net.xp
    target = "cuda" if device == "gpu" else "cpu"
    weights = {layer.name: [torch.from_numpy(np.array(blob.data.numpy())).to(target)
                            for blob in layer.blobs] for layer in model.layers if layer.blobs}
    logits_name = model.layers[-1].bottoms[0]
    rows = []
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        ours_x, theirs_x = xp.asarray(x), torch.from_numpy(x).to(target)

        def ours(keep_all=False, ours_x=ours_x):
            out = net.forward({"data": ours_x}, keep_all=keep_all)
            _synchronise(xp, torch, device)
            return out

        def theirs(theirs_x=theirs_x):
            with torch.no_grad():
                out = torch_forward(torch, model, weights, theirs_x)
            _synchronise(xp, torch, device)
            return out

        ours(), theirs()  # warm-up: kernels compiled, weights on the device
        if device == "gpu":
            xp.get_default_memory_pool().free_all_blocks()
            torch.cuda.reset_peak_memory_stats()
        pairs = []
        for _ in range(runs):
            start = time.perf_counter()
            ours()
            middle = time.perf_counter()
            theirs()
            pairs.append((middle - start, time.perf_counter() - middle))
        mine = ours(keep_all=True)[logits_name]
        mine = np.asarray(mine.get() if hasattr(mine, "get") else mine)
        expected = theirs()[logits_name].cpu().numpy()
        row = {"net": name, "batch": batch,
               "blobcast_s": statistics.median(p[0] for p in pairs),
               "torch_s": statistics.median(p[1] for p in pairs),
               "ratio": statistics.median(p[0] / p[1] for p in pairs),
               "logits_max_rel_difference": float(np.abs(mine - expected).max() / np.abs(expected).max())}
        if device == "gpu":
            row["blobcast_peak_mb"] = xp.get_default_memory_pool().total_bytes() / 1e6
            row["torch_peak_mb"] = torch.cuda.max_memory_allocated() / 1e6
        rows.append(row)
        print(_row(row), file=sys.stderr, flush=True)
    net.release()
    return rows


def _row(row: dict) -> str:
    memory = (f" {row['blobcast_peak_mb']:10.0f} {row['torch_peak_mb']:9.0f}"
              if "torch_peak_mb" in row else "")
    return (f"{row['net']:<16} {row['batch']:5d} {row['blobcast_s']:11.4f} {row['torch_s']:9.4f} "
            f"{row['ratio']:6.2f} {row['logits_max_rel_difference']:12.2e}{memory}")


def main() -> None:
    parser = benchmark_parser(__doc__, runs=10)
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    options = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("gpu_speed: PyTorch is not installed (pip install torch); nothing measured")
        return
    if options.device == "gpu":
        try:
            import cupy

            usable = cupy.cuda.runtime.getDeviceCount() > 0 and torch.cuda.is_available()
        except Exception:  # no CuPy, or no driver
            usable = False
        if not usable:
            print("gpu_speed: no GPU with both CuPy and PyTorch's CUDA here; nothing measured")
            return
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    names = chosen_nets(parser, options.nets)
    batches = [int(b) for b in options.batches.split(",")]
    header = (f"{'net':<16} {'batch':>5} {'blobcast s':>11} {'torch s':>9} {'ratio':>6} {'logits diff':>12}"
              + (f" {'blobcast MB':>10} {'torch MB':>9}" if options.device == "gpu" else ""))
    print(f"blobcast on {options.device} against PyTorch {torch.__version__} eager (fp32, TF32 off); "
          f"medians of {options.runs} interleaved pairs; ratio below 1: blobcast is faster",
          file=sys.stderr)
    print(header, file=sys.stderr, flush=True)
    measure_and_report(
        names, lambda name, folder: measure(name, folder, batches, options.runs, options.device, torch),
        header, _row, options.json, {"device": options.device, "torch": torch.__version__},
        "blobcast-gpu-")


if __name__ == "__main__":
    main()
