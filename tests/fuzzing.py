"""Mutation fuzzing of blobcast's readers: each mutated file must either read
(every tensor included) or raise BlobcastError: no other exception, no hang."""

from __future__ import annotations

import os
import random
import signal
import traceback
import warnings
from dataclasses import dataclass, field

import blobcast


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def mutate(data: bytes, rng: random.Random) -> bytes:
    m = bytearray(data)
    kind = rng.choice(["truncate", "flip", "splice", "zero", "duplicate"])
    if kind == "truncate" or not m:
        return bytes(m[: rng.randrange(len(m) + 1)])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(m))
            m[position] ^= 1 << rng.randrange(8)
    elif kind == "splice":
        position = rng.randrange(len(m))
        m[position:position + rng.randint(1, 32)] = os.urandom(rng.randint(1, 32))
    elif kind == "zero":
        position = rng.randrange(len(m))
        m[position:position + rng.randint(1, 64)] = bytes(rng.randint(1, 64))
    else:
        start = rng.randrange(len(m))
        chunk = m[start:start + rng.randint(1, 256)]
        position = rng.randrange(len(m))
        m[position:position] = chunk
    return bytes(m)


def read_fully(path: str) -> None:
    obj = blobcast.load(path)
    if isinstance(obj, blobcast.SolverState):
        for tensor in obj.history:
            tensor.numpy().sum()
        return
    for layer in obj.layers:
        for blob in layer.blobs:
            if blob is not None:
                blob.data.numpy().sum()
                if blob.diff is not None:
                    blob.diff.numpy().sum()


@dataclass
class FuzzReport:
    cases: int = 0
    read: int = 0
    refused: int = 0
    failures: list[str] = field(default_factory=list)


def fuzz_readers(sources: list[str], folder: str, iterations: int, seed: int = 0,
                 timeout: int = 10) -> FuzzReport:
    rng = random.Random(seed)
    report = FuzzReport()
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for source in sources:
            data = open(source, "rb").read()
            target = os.path.join(folder, os.path.basename(source))
            for _ in range(iterations):
                with open(target, "wb") as handle:
                    handle.write(mutate(data, rng))
                report.cases += 1
                signal.alarm(timeout)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        read_fully(target)
                    report.read += 1
                except blobcast.BlobcastError:
                    report.refused += 1
                except Hang:
                    report.failures.append(f"{os.path.basename(source)}: no answer in {timeout} s")
                except Exception as error:  # the defect this hunts for
                    line = traceback.format_exception_only(type(error), error)[-1].strip()
                    report.failures.append(f"{os.path.basename(source)}: {line}")
                finally:
                    signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    return report
