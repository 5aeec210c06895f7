"""What a conversion reports (`convert`'s result, and its --json)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ConversionReport:
    source: str
    destination: str
    source_format: str
    destination_format: str
    layers: int = 0
    tensors: int = 0
    bytes: int = 0
    seconds: float = 0.0
    check: str = ""
    # The forward check: {"outputs": n, "max_abs_error": e, "passed": True}, or None
    # when it did not run (see notes for why).
    forward: dict | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    weights: ConversionReport | None = None

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "weights"}
        out["weights"] = self.weights.to_dict() if self.weights else None
        return out
