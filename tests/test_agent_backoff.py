"""Capped exponential backoff with full jitter (``rciots.agent.backoff``), with the random draw
injected so that every wait is known."""

from __future__ import annotations

import random

import pytest

from rciots.agent.backoff import Backoff


class Draws:
    """A draw that records the bounds it was asked for and answers a fixed share of them."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.bounds: list[tuple[float, float]] = []

    def __call__(self, low: float, high: float) -> float:
        self.bounds.append((low, high))
        return low + (high - low) * self.share


def test_each_wait_is_drawn_between_zero_and_the_doubling_ceiling() -> None:
    draws = Draws(share=1.0)
    backoff = Backoff(base=0.5, cap=100.0, draw=draws)
    waits = [backoff.next() for _ in range(5)]
    assert draws.bounds == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 4.0), (0.0, 8.0)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_the_draw_decides_where_in_the_range_a_wait_falls() -> None:
    backoff = Backoff(base=1.0, cap=100.0, draw=Draws(share=0.25))
    assert [backoff.next() for _ in range(3)] == [0.25, 0.5, 1.0]


def test_the_ceiling_stops_at_the_cap() -> None:
    draws = Draws(share=1.0)
    backoff = Backoff(base=1.0, cap=5.0, draw=draws)
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.ceiling() == 5.0


def test_many_failures_neither_overflow_nor_pass_the_cap() -> None:
    backoff = Backoff(base=1.0, cap=300.0, draw=Draws(share=1.0))
    for _ in range(2000):
        backoff.next()
    assert backoff.failures == 2000
    assert backoff.ceiling() == 300.0
    assert backoff.next() == 300.0


def test_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(base=2.0, cap=60.0, draw=Draws(share=1.0))
    for _ in range(4):
        backoff.next()
    assert backoff.ceiling() == 32.0
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.ceiling() == 2.0
    assert backoff.next() == 2.0


def test_random_waits_stay_within_their_bounds() -> None:
    source = random.Random(20261201)  # noqa: S311 -- jitter, not secrets; seeded to repeat
    backoff = Backoff(base=1.0, cap=30.0, draw=source.uniform)
    for _ in range(200):
        ceiling = backoff.ceiling()
        assert 0.0 <= backoff.next() <= ceiling
    # full jitter: the waits spread over the whole range, not around its top
    late = [backoff.next() for _ in range(200)]
    assert min(late) < 3.0
    assert max(late) > 27.0


def test_base_equal_to_cap_is_a_fixed_ceiling() -> None:
    backoff = Backoff(base=3.0, cap=3.0, draw=Draws(share=1.0))
    assert [backoff.next() for _ in range(3)] == [3.0, 3.0, 3.0]


@pytest.mark.parametrize(("base", "cap"), [(0.0, 10.0), (-1.0, 10.0), (5.0, 4.0)])
def test_bad_settings_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff needs 0 < base <= cap") as raised:
        Backoff(base=base, cap=cap)
    assert str(raised.value) == f"backoff needs 0 < base <= cap, not {base} and {cap}"


@pytest.mark.parametrize(
    ("base", "cap"),
    [(float("nan"), 10.0), (1.0, float("nan")), (1.0, float("inf")), (float("inf"), float("inf"))],
)
def test_settings_that_are_not_finite_are_refused(base: float, cap: float) -> None:
    """NaN passed both comparisons and inf made a wait of for ever."""
    with pytest.raises(ValueError, match="backoff needs 0 < base <= cap"):
        Backoff(base=base, cap=cap)
