"""A change counter: moves whenever something the status page shows may have changed.

Position in the flow: the controller (reconcile passes, connector observations, registry
changes) -> **changes** -> status page (its cached views are rebuilt when the number moved,
and its server-sent events tell browsers to refresh). Callers bump it from the event loop and
from worker threads alike; readers only compare numbers, so nothing waits on anything.
"""

from __future__ import annotations

import threading

__all__ = ["Changes"]


class Changes:
    """``bump()`` on every change; ``value`` is the number of changes so far."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()  # += is not atomic across threads

    def bump(self) -> None:
        with self._lock:
            self._value += 1

    @property
    def value(self) -> int:
        return self._value
