"""Credentials out of text: the one place that strips ``user:password@`` from URLs.

Every message, log line and status text that may hold a URL (a Git remote, an error from
libgit2) passes through ``redact`` before it is shown or written.
"""

from __future__ import annotations

import re

__all__ = ["redact"]

# greedy up to the last '@' before the host: a password may itself hold '@'
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s]*@")


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URL in it removed."""
    return _USERINFO.sub(r"\1", text)
