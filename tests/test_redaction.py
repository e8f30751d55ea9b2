"""Credentials are stripped from URLs in any text before it is shown or written."""

from __future__ import annotations

import pytest

from rciots.controller import redaction


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("see https://u:p@h/x and ssh://git@h:22/r", "see https://h/x and ssh://h:22/r"),
        ("https://user:p@ss@host/repo.git", "https://host/repo.git"),  # '@' in the password
        ("HTTP://tok@host", "HTTP://host"),
        ("mail a@b.c about git://host/x", "mail a@b.c about git://host/x"),
        ("https://host/path?q=a@b", "https://host/path?q=a@b"),
        ("https://bot:tok%40en@git.example.com/f.git", "https://git.example.com/f.git"),
        # a path, a URL without credentials and scp-like Git syntax hold no secret
        ("/srv/fleet", "/srv/fleet"),
        ("git://127.0.0.1:9418/f.git", "git://127.0.0.1:9418/f.git"),
        ("git@github.com:o/fleet.git", "git@github.com:o/fleet.git"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redaction.redact(text) == shown
