"""Forward-pass speed: blobcast's engine against OpenCV's dnn and onnxruntime.

Five nets (benchmarks/nets.py: ResNet-50, ResNet-50-1by2, MobileNet-v1,
GoogLeNet-style, VGG16) with the same seeded weights and inputs, at batch 1
and 8, on 1 and 2 threads (BLAS threads through threadpoolctl, OpenCV's
through cv2.setNumThreads, the engine's own through
blobcast.threads.set_threads: its compiled kernels, where numba is
installed, and its NumPy blocks; BLOBCAST_COMPILED=0 measures NumPy alone).
Calls alternate between the engines with a pause between them (OpenBLAS
threads spin for a while after a call). The
ratio is the median of the per-run ratios. Also checks that OpenCV agrees:
the largest difference of the logits, relative to the largest logit.

A second reference: each net converted to ONNX by blobcast (batch axis left
free) and run by onnxruntime's CPU provider, intra_op_num_threads set to the
same thread count (a session per count), its calls interleaved with the
other two; "ORT ratio" is blobcast's time over onnxruntime's (--no-onnx
leaves it out). --profile adds, for each row, where blobcast's pass spent
its time per layer family.

    python benchmarks/engine_speed.py [--runs 5] [--nets ResNet-50,VGG16]
        [--batches 1,8] [--threads 1,2] [--device cpu|gpu] [--no-onnx]
        [--clock wall|cpu] [--profile] [--no-winograd] [--json]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
from nets import benchmark_parser, chosen_nets, measure_and_report, write_net

import blobcast
from blobcast.engine import Net
from blobcast.layers import compiled
from blobcast.threads import set_threads

PAUSE_S = 0.3


# --clock cpu: the process's CPU time, which other processes on a busy
# machine barely change; fair at one thread only (at more it also counts
# the time BLAS threads spin between calls).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = {"now": time.perf_counter}


def timed(action) -> float:
    start = _clock["now"]()
    action()
    return _clock["now"]() - start


def blas_description() -> str:
    from threadpoolctl import threadpool_info

    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "OpenBLAS's own")
    return ", ".join(f"{p['internal_api']} {p.get('version')} ({p.get('architecture')}, "
                     f"idle-thread timeout {timeout})" for p in pools) or "unknown BLAS"


def onnx_sessions(name: str, folder: str, prototxt: str, weights: str, threads) -> dict:
    """An onnxruntime session per thread count, on the net converted to ONNX."""
    import onnxruntime

    path = os.path.join(folder, f"{name}.onnx")
    blobcast.convert(weights, path, prototxt=prototxt, forward_check=False,
                     onnx_options={"dynamic_batch": True})
    sessions = {}
    for count in threads:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = count
        options.inter_op_num_threads = 1
        sessions[count] = onnxruntime.InferenceSession(path, options,
                                                       providers=["CPUExecutionProvider"])
    return sessions


def layer_family(layer) -> str:
    """A layer's family for --profile: its type; convolutions by kernel,
    stride and depthwise."""
    if layer.type != "Convolution":
        return layer.type
    p = layer.spec.convolution_param
    kernel = list(p.kernel_size)[0] if p.kernel_size else p.kernel_h
    stride = list(p.stride)[0] if p.stride else 1
    return (f"Convolution {kernel}x{kernel}" + (" depthwise" if p.group > 1 else "")
            + (f" stride {stride}" if stride > 1 else ""))


def profile(net: Net, x, runs: int) -> dict:
    """Seconds a pass spends per layer family, in-place chains (BatchNorm,
    Scale, ReLU run block by block on a blob) apart. The engine keeps no
    timers of its own: its two calls that run layers are timed from
    outside, on this Net only."""
    spent: dict = {}

    def timer(method, key):
        def timed_call(layer, *args):
            start = _clock["now"]()
            try:
                return method(layer, *args)
            finally:
                name = key(layer, args)
                spent[name] = spent.get(name, 0.0) + _clock["now"]() - start
        return timed_call

    net._run_layer = timer(net._run_layer, lambda layer, args: layer_family(layer))
    net._run_chain = timer(net._run_chain, lambda layer, args: "in-place chain from " + layer.type
                           + f" ({len(args[1])} steps)")
    try:
        start = _clock["now"]()
        for _ in range(runs):
            net.forward({"data": x})
        total = _clock["now"]() - start
    finally:
        del net._run_layer, net._run_chain
    return {"total_s": total / runs, **{k: v / runs for k, v in
                                         sorted(spent.items(), key=lambda item: -item[1])}}


def print_profile(name: str, batch: int, count: int, spent: dict) -> None:
    total = spent["total_s"]
    print(f"profile {name} batch {batch}, {count} thread(s): {1000 * total:.1f} ms a pass",
          file=sys.stderr)
    for family, seconds in spent.items():
        if family != "total_s":
            print(f"    {family:<42} {1000 * seconds:9.1f} ms {100 * seconds / total:5.1f}%",
                  file=sys.stderr)


def measure(name: str, folder: str, batches, threads, runs: int, device: str,
            with_onnx: bool = True, with_profile: bool = False, winograd: bool = True) -> list[dict]:
    import cv2
    from threadpoolctl import threadpool_limits

    prototxt, weights = write_net(name, folder)
    model = blobcast.load(weights, prototxt=prototxt)
    sessions = onnx_sessions(name, folder, prototxt, weights, threads) if with_onnx else {}
    net = Net(model, device=device, winograd=winograd)
    xp = net.xp
    reference = cv2.dnn.readNetFromCaffe(prototxt, weights)
    logits_name = model.layers[-1].bottoms[0]
    rows = []
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        device_x = xp.asarray(x)

        def ours(keep_all=False, device_x=device_x):
            out = net.forward({"data": device_x}, keep_all=keep_all)
            if xp is not np:
                xp.cuda.Stream.null.synchronize()
            return out

        def opencv(x=x):
            reference.setInput(x)
            return reference.forward([logits_name, "prob"])

        for count in threads:
            cv2.setNumThreads(count)
            set_threads(count)
            session = sessions.get(count)
            engines = [ours, opencv] + ([] if session is None else [
                lambda session=session, x=x: session.run(None, {"data": x})])
            with threadpool_limits(limits=count):
                for engine in engines:  # warm-up: weights on the device, buffers made
                    engine()
                times = []
                for _ in range(runs):
                    run_times = []
                    for engine in engines:
                        time.sleep(PAUSE_S)
                        run_times.append(timed(engine))
                    times.append(run_times)
                logits = ours(keep_all=True)[logits_name]
                logits = np.asarray(logits.get() if hasattr(logits, "get") else logits)
                expected = opencv()[0]
            difference = float(np.abs(logits - expected).max() / np.abs(expected).max())
            rows.append({
                "net": name, "batch": batch, "threads": count,
                "blobcast_s": statistics.median(t[0] for t in times),
                "opencv_s": statistics.median(t[1] for t in times),
                "ratio": statistics.median(t[0] / t[1] for t in times),
                "logits_max_rel_difference": difference})
            if session is not None:
                rows[-1].update({"onnxruntime_s": statistics.median(t[2] for t in times),
                                 "onnxruntime_ratio": statistics.median(t[0] / t[2] for t in times)})
            print(_row(rows[-1]), file=sys.stderr, flush=True)
            if with_profile:
                with threadpool_limits(limits=count):
                    rows[-1]["profile"] = profile(net, device_x, runs)
                print_profile(name, batch, count, rows[-1]["profile"])
    set_threads(None)
    net.release()
    return rows


def _row(row: dict) -> str:
    onnx = (f" {row['onnxruntime_s']:10.4f} {row['onnxruntime_ratio']:9.2f}"
            if "onnxruntime_s" in row else f" {'-':>10} {'-':>9}")
    return (f"{row['net']:<16} {row['batch']:5d} {row['threads']:7d} {row['blobcast_s']:11.4f} "
            f"{row['opencv_s']:9.4f} {row['ratio']:6.2f}{onnx} "
            f"{row['logits_max_rel_difference']:12.2e}")


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-onnx", action="store_true", help="leave onnxruntime out")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="cpu: process CPU time, steadier on a busy machine at 1 thread")
    parser.add_argument("--profile", action="store_true",
                        help="also time blobcast's passes per layer family")
    parser.add_argument("--no-winograd", action="store_true",
                        help="every convolution summed in Caffe's order (the engine's --no-winograd)")
    options = parser.parse_args()
    _clock["now"] = CLOCKS[options.clock]
    import cv2

    names = chosen_nets(parser, options.nets)
    batches = [int(b) for b in options.batches.split(",")]
    threads = [int(t) for t in options.threads.split(",")]
    header = (f"{'net':<16} {'batch':>5} {'threads':>7} {'blobcast s':>11} {'OpenCV s':>9} "
              f"{'ratio':>6} {'ORT s':>10} {'ORT ratio':>9} {'logits diff':>12}")
    with_onnx = not options.no_onnx
    if with_onnx:
        import onnxruntime
    print(f"blobcast on {options.device} against OpenCV {cv2.__version__} dnn on the CPU"
          + (f" and onnxruntime {onnxruntime.__version__} (CPU provider)" if with_onnx else "")
          + "; "
          f"numpy {np.__version__} on {blas_description()}; compiled kernels "
          f"{'on' if compiled.enabled() else 'off (NumPy only)'}; 3x3 convolutions "
          f"{'in Caffe order' if options.no_winograd else 'by Winograd'}; {options.clock} clock; "
          f"medians of {options.runs} "
          "interleaved runs; ratio below 1: blobcast is faster", file=sys.stderr)
    print(header, file=sys.stderr, flush=True)
    measure_and_report(
        names, lambda name, folder: measure(name, folder, batches, threads, options.runs,
                                            options.device, with_onnx, options.profile,
                                            not options.no_winograd),
        header, _row, options.json,
        {"device": options.device, "blas": blas_description(), "opencv": cv2.__version__,
         "compiled_kernels": compiled.enabled(), "winograd": not options.no_winograd,
         "onnxruntime": onnxruntime.__version__ if with_onnx else None, "clock": options.clock},
        "blobcast-engine-")


if __name__ == "__main__":
    main()
