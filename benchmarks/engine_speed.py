"""Forward-pass speed: blobcast's engine against OpenCV's dnn, side by side.

Five nets (benchmarks/nets.py: ResNet-50, ResNet-50-1by2, MobileNet-v1,
GoogLeNet-style, VGG16) with the same seeded weights and inputs, at batch 1
and 8, on 1 and 2 threads (BLAS threads through threadpoolctl, OpenCV's
through cv2.setNumThreads). Calls alternate between the two engines with a
pause between them (OpenBLAS threads spin for a while after a call); the
engine's own threads (blobcast.threads) stay at their setting
(BLOBCAST_THREADS, default 1), as a user runs it. The
ratio is the median of the per-pair ratios. Also checks that the two agree:
the largest difference of the logits, relative to the largest logit.

    python benchmarks/engine_speed.py [--runs 5] [--nets ResNet-50,VGG16]
        [--batches 1,8] [--threads 1,2] [--device cpu|gpu] [--json]
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
from nets import benchmark_parser, chosen_nets, measure_and_report, write_net

import blobcast
from blobcast.engine import Net
from blobcast.threads import threads as engine_threads

PAUSE_S = 0.3


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def blas_description() -> str:
    from threadpoolctl import threadpool_info

    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return ", ".join(f"{p['internal_api']} {p.get('version')} ({p.get('architecture')})"
                     for p in pools) or "unknown BLAS"


def measure(name: str, folder: str, batches, threads, runs: int, device: str) -> list[dict]:
    import cv2
    from threadpoolctl import threadpool_limits

    prototxt, weights = write_net(name, folder)
    model = blobcast.load(weights, prototxt=prototxt)
    net = Net(model, device=device)
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
            with threadpool_limits(limits=count):
                ours(), opencv()  # warm-up: weights on the device, buffers made
                pairs = []
                for _ in range(runs):
                    time.sleep(PAUSE_S)
                    mine = timed(ours)
                    time.sleep(PAUSE_S)
                    theirs = timed(opencv)
                    pairs.append((mine, theirs))
                logits = ours(keep_all=True)[logits_name]
                logits = np.asarray(logits.get() if hasattr(logits, "get") else logits)
                expected = opencv()[0]
            difference = float(np.abs(logits - expected).max() / np.abs(expected).max())
            rows.append({
                "net": name, "batch": batch, "threads": count,
                "blobcast_s": statistics.median(p[0] for p in pairs),
                "opencv_s": statistics.median(p[1] for p in pairs),
                "ratio": statistics.median(p[0] / p[1] for p in pairs),
                "logits_max_rel_difference": difference})
            print(_row(rows[-1]), file=sys.stderr, flush=True)
    net.release()
    return rows


def _row(row: dict) -> str:
    return (f"{row['net']:<16} {row['batch']:5d} {row['threads']:7d} {row['blobcast_s']:11.4f} "
            f"{row['opencv_s']:9.4f} {row['ratio']:6.2f} {row['logits_max_rel_difference']:12.2e}")


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--device", default="cpu")
    options = parser.parse_args()
    import cv2

    names = chosen_nets(parser, options.nets)
    batches = [int(b) for b in options.batches.split(",")]
    threads = [int(t) for t in options.threads.split(",")]
    header = (f"{'net':<16} {'batch':>5} {'threads':>7} {'blobcast s':>11} {'OpenCV s':>9} "
              f"{'ratio':>6} {'logits diff':>12}")
    print(f"blobcast on {options.device} against OpenCV {cv2.__version__} dnn on the CPU; "
          f"numpy {np.__version__} on {blas_description()}; engine threads besides BLAS: "
          f"{engine_threads()}; medians of {options.runs} "
          "interleaved pairs; ratio below 1: blobcast is faster", file=sys.stderr)
    print(header, file=sys.stderr, flush=True)
    measure_and_report(
        names, lambda name, folder: measure(name, folder, batches, threads, options.runs,
                                            options.device),
        header, _row, options.json,
        {"device": options.device, "blas": blas_description(), "opencv": cv2.__version__},
        "blobcast-engine-")


if __name__ == "__main__":
    main()
