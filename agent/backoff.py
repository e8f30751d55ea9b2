"""Waiting between attempts: capped exponential backoff with full jitter.

Position in the flow: the agent's connection and enrollment loops ask **backoff** how long to
wait after a failure. Full jitter (a uniform draw between 0 and the capped exponential) keeps a
fleet that lost the controller together from coming back in lockstep. Pure but for the random
source, which is a parameter.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """``next()`` after each failure; ``reset()`` after a success."""

    def __init__(
        self,
        base: float = 1.0,
        cap: float = 300.0,
        draw: Callable[[float, float], float] = random.uniform,
    ) -> None:
        # NaN passes both comparisons below, and an infinite cap is a wait of for ever
        if not (math.isfinite(base) and math.isfinite(cap)) or base <= 0 or cap < base:
            raise ValueError(f"backoff needs 0 < base <= cap, not {base} and {cap}")
        self.base = base
        self.cap = cap
        self.draw = draw
        self.failures = 0

    def ceiling(self) -> float:
        """The longest the next wait can be."""
        return min(self.cap, self.base * 2.0 ** min(self.failures, 62))

    def next(self) -> float:
        wait = self.draw(0.0, self.ceiling())
        self.failures += 1
        return wait

    def reset(self) -> None:
        self.failures = 0
