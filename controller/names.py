"""Name and label syntax shared by the schemas' rules and the command-line tools.

The JSON Schemas check names inside files; these functions check names typed on the command
line, with the same rules (DNS-1123 labels, Kubernetes label keys and values).
"""

from __future__ import annotations

import re

__all__ = [
    "DNS_LABEL_HINT",
    "is_dns_label",
    "is_label_key",
    "is_label_value",
    "parse_label",
]

DNS_LABEL_HINT = (
    "use a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a "
    "letter or digit, at most 63 characters"
)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns_label(name: str) -> bool:
    return len(name) <= 63 and _DNS_LABEL.fullmatch(name) is not None


def is_label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and _LABEL_NAME.fullmatch(name) is not None


def is_label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and _LABEL_NAME.fullmatch(value) is not None)


def parse_label(text: str) -> tuple[str, str]:
    """Parse ``key=value`` as typed on a command line; raise ValueError saying what is wrong."""
    key, equals, value = text.partition("=")
    if not equals:
        raise ValueError(f"label {text!r} has no '=': write it as key=value")
    if not is_label_key(key):
        raise ValueError(
            f"label key {key!r} is not valid: use an optional DNS prefix and '/', then at most "
            "63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    if not is_label_value(value):
        raise ValueError(
            f"label value {value!r} is not valid: use at most 63 letters, digits, '-', '_' or "
            "'.', starting and ending with a letter or digit"
        )
    return key, value
