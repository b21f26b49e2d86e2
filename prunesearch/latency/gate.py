"""Whether a candidate fits search.max_latency: the table decides far from the limit, a
measurement decides near it.

A search under a limit is an optimiser against the table: it drifts to the networks the table
under-predicts most, so even a limit corrected on networks near it (`limit.py`) lets through
candidates that measure a fifth over it, and keeps out some that measure under (measured in the
resnet20 cell at 0.25: picks predicted 0.23 measured 0.29-0.30, against a median of x1.08 for
the networks the correction timed). So every candidate predicted within NEAR x the corrected
limit is timed once, in turns with the dense model, and kept only when it MEASURES at most the
target. Timings decide then, so such a run is not bit-reproducible; `search.measure_limit =
false` lets the table alone decide.
"""

from __future__ import annotations

from collections.abc import Callable

from prunesearch.spaces import Arch

NEAR = (0.75, 1.25)  # candidates predicted within this band of the limit are measured


class LatencyGate:
    """`over(arch)`: why an arch is over the limit, or None when it fits. `limit_us`: the limit
    in the table's microseconds (`predict`); `target`: the user's measured ratio to dense;
    `measure(arch)`: its measured ratio to dense (None: the table alone decides)."""

    def __init__(self, predict: Callable[[Arch], float], limit_us: float, target: float,
                 measure: Callable[[Arch], float] | None = None) -> None:
        self.predict, self.limit_us, self.target = predict, limit_us, target
        self.measure = measure
        self.measured: dict[Arch, float] = {}

    def over(self, arch: Arch) -> str | None:
        predicted = self.predict(arch)
        low, high = NEAR[0] * self.limit_us, NEAR[1] * self.limit_us
        if self.measure is None or not low <= predicted <= high:
            if predicted <= self.limit_us:
                return None
            return (f"predicted latency {predicted:.0f} us is over search.max_latency "
                    f"({self.limit_us:.0f} us)")
        if arch not in self.measured:
            self.measured[arch] = self.measure(arch)
        ratio = self.measured[arch]
        if ratio <= self.target:
            return None
        return (f"measured latency {ratio:.3f} of the dense model's is over "
                f"search.max_latency ({self.target})")

    def to_dict(self) -> dict[str, int]:
        """How many candidates a measurement decided, and how many of them it refused."""
        return {"candidates_measured": len(self.measured),
                "measured_over": sum(r > self.target for r in self.measured.values())}
