"""Prometheus metrics of the controller, in the text exposition format (version 0.0.4).

Position in the flow: the controller's parts count what they do (reconcile passes into a
``Histogram`` kept by the controller, enrollment answers, the connector's pushes and bytes
sent as plain counters on the connector) -> **metrics** (families, rendered as text) ->
``GET /metrics`` of the status page, which gathers the gauges (devices by state, connected
agents, render errors) from the current views when scraped.

Only what a scrape needs: counters, gauges and one histogram, with labels; no registry and no
global state, so that two controllers in one process (as in tests) never share a number.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CONTENT_TYPE", "Family", "Histogram", "Sample", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Kind = Literal["counter", "gauge", "histogram"]

# seconds: a pass that re-renders a few devices takes milliseconds, 10,000 devices seconds
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Sample:
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    suffix: str = ""  # "_bucket", "_sum", "_count" for a histogram's lines


@dataclass(frozen=True)
class Family:
    name: str
    kind: Kind
    help: str
    samples: Sequence[Sample]


class Histogram:
    """Observations counted into cumulative buckets (``le``), with their sum and count."""

    def __init__(self, buckets: Sequence[float] = RECONCILE_BUCKETS) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def family(self, name: str, help: str) -> Family:
        samples = []
        cumulative = 0
        for bound, counted in zip(self.bounds, self.counts, strict=False):
            cumulative += counted
            samples.append(Sample(cumulative, {"le": _number(bound)}, "_bucket"))
        samples.append(Sample(self.count, {"le": "+Inf"}, "_bucket"))
        samples.append(Sample(self.sum, suffix="_sum"))
        samples.append(Sample(self.count, suffix="_count"))
        return Family(name, "histogram", help, samples)


def render(families: Iterable[Family]) -> str:
    """The exposition text: ``# HELP``, ``# TYPE`` and one line per sample of each family."""
    lines = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            labels = ",".join(
                f'{key}="{_escape_label(value)}"' for key, value in sample.labels.items()
            )
            shown = f"{{{labels}}}" if labels else ""
            lines.append(f"{family.name}{sample.suffix}{shown} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
