"""What modules cost: finding the blocks of a flat net, writing its modular
form (checked by flattening it again), and reading that form back, beside
reading the flat prototxt (the reference). Medians of --runs in one process.

    python benchmarks/modules_speed.py [--nets ResNet-50,GoogLeNet-style] [--runs 5] [--json]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nets import NETS, benchmark_parser, chosen_nets, measure_and_report, median_seconds  # noqa: E402

import blobcast  # noqa: E402
from blobcast.api import modularize  # noqa: E402
from blobcast.module_discovery import discover_modules  # noqa: E402


def measure(name: str, folder: str, runs: int) -> list[dict]:
    flat = os.path.join(folder, f"{name}.prototxt")
    with open(flat, "w") as handle:
        handle.write(NETS[name]())
    modular = os.path.join(folder, f"{name}.modules.prototxt")
    report = modularize(flat, modular, overwrite=True)
    reference = median_seconds(lambda: blobcast.load(flat), runs)
    rows = []
    for what, action in (
            ("find the blocks", lambda: discover_modules(blobcast.load(flat))),
            ("modularize (checked)", lambda: modularize(flat, modular, overwrite=True)),
            ("read the modular form", lambda: blobcast.load(modular))):
        seconds = median_seconds(action, runs)
        rows.append({"net": name, "layers": report["layers"], "operation": what, "seconds": seconds,
                     "reference_seconds": reference, "ratio": seconds / reference,
                     "modules": ", ".join(f"{m['module']} x{len(m['instances'])}" for m in report["modules"]),
                     "lines": report["lines"]})
    return rows


def main() -> None:
    parser = benchmark_parser(__doc__, nets="ResNet-50,GoogLeNet-style,MobileNet-v1")
    args = parser.parse_args()
    header = (f"{'net':<16} {'layers':>6} {'operation':<22} {'time':>8} {'flat read':>9} {'ratio':>6}  "
              "modules found (lines flat -> modular)")

    def line(r):
        return (f"{r['net']:<16} {r['layers']:>6} {r['operation']:<22} {r['seconds']:>7.3f}s "
                f"{r['reference_seconds']:>8.3f}s {r['ratio']:>6.2f}  {r['modules'] or 'none'} "
                f"({r['lines']['flat']} -> {r['lines']['modular']})")

    measure_and_report(chosen_nets(parser, args.nets),
                       lambda name, folder: measure(name, folder, args.runs), header, line,
                       args.json, {"runs": args.runs, "medians": True}, "blobcast-modules-")


if __name__ == "__main__":
    main()
