"""Real processes for end-to-end tests: start one, wait for a line on its stderr, stop it
with SIGINT, and never leave it running (killed, by its own pid, if it does not stop)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = ["Process"]


class Process:
    """``with Process([...]) as p: p.wait_for("ready")``; stopped (SIGINT) on the way out."""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        *,
        with_stdout: bool = False,  # read standard output too (merged into stderr's lines)
    ) -> None:
        self.argv = list(argv)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.popen = subprocess.Popen(
            self.argv,
            stderr=subprocess.STDOUT if with_stdout else subprocess.PIPE,
            stdout=subprocess.PIPE if with_stdout else subprocess.DEVNULL,
            text=True,
            cwd=cwd,
            env={**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"},
        )
        self.stream = self.popen.stdout if with_stdout else self.popen.stderr
        assert self.stream is not None
        self._reader = threading.Thread(target=_pump, args=(self.stream, self.lines), daemon=True)
        self._reader.start()

    def wait_for(self, text: str, within: float = 20.0) -> str:
        """The first line (from now on) holding ``text``; AssertionError with what the
        process said when it ends or ``within`` seconds pass first."""
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(
            f"{self.argv[0]} did not say {text!r} within {within} s:\n{''.join(self.seen[-40:])}"
        )

    def stop(self, within: float = 20.0) -> int:
        """SIGINT, then its exit code (killed after ``within`` seconds)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=within)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(timeout=5)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        if self.stream is not None and not self._reader.is_alive():
            self.stream.close()
        return int(self.popen.returncode)

    @property
    def output(self) -> str:
        return "".join(self.seen)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pump(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)
