"""Timestamps in the fleet repo (a token's ``expires``) and on the command line (``--expires``).

One parser for both, so that what a file may hold and what a command accepts are the same: a
date, meaning 00:00 UTC that day, or an RFC 3339 date-time with a zone (``Z`` or ``+hh:mm``);
a time without a zone is refused, since the controller and the person who wrote the time
rarely share one. Pure.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

__all__ = ["HINT", "format_timestamp", "parse_timestamp"]

HINT = "write a date (2027-12-31) or an RFC 3339 time with zone (2027-12-31T18:00:00Z)"

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DATE_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?:\.(?P<fraction>\d+))?(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)
_NAIVE_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?")


def format_timestamp(when: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, e.g. ``2027-12-31T00:00:00Z``."""
    return when.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def parse_timestamp(text: str) -> datetime:
    """The aware datetime ``text`` names; ValueError saying how to write it otherwise."""
    if _DATE.fullmatch(text):
        return _at_midnight_utc(text)
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        if _NAIVE_DATE_TIME.fullmatch(text):
            raise ValueError(
                "the time has no zone: add Z for UTC or an offset such as +02:00 "
                "(2027-12-31T18:00:00Z)"
            )
        raise ValueError(HINT)
    try:
        return datetime(
            *_date_parts(match["date"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            _microseconds(match["fraction"]),
            tzinfo=_zone(match["zone"]),
        )
    except ValueError:
        raise ValueError(HINT) from None


def _at_midnight_utc(text: str) -> datetime:
    try:
        return datetime(*_date_parts(text), tzinfo=UTC)
    except ValueError:
        raise ValueError(HINT) from None


def _date_parts(text: str) -> tuple[int, int, int]:
    year, month, day = text.split("-")
    return int(year), int(month), int(day)


def _microseconds(fraction: str | None) -> int:
    # RFC 3339 allows any number of digits; a datetime keeps six.
    return int((fraction or "0")[:6].ljust(6, "0"))


def _zone(text: str) -> timezone:
    if text in ("Z", "z"):
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError(text)
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)
