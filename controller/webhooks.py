"""Push webhooks from GitHub, Gitea and GitLab: authenticate a delivery and read the push.

Where it sits: a forge's push webhook wakes the source (source -> fleet model -> render ->
desired -> connector/status) so that a merged commit is fetched at once instead of at the next
poll. This module is the pure part: headers and raw body in, a ``PushEvent`` (or None for a
delivery that is no push, such as GitHub's ``ping``) out, ``WebhookRejected`` for a delivery to
refuse. ``webhook_endpoint`` is the HTTP layer around it.

Order of checks, which is what keeps unauthenticated input away from the JSON parser:

1. the provider, from its event header (Gitea first: it also sends GitHub's headers);
2. the signature (GitHub, Gitea: HMAC-SHA256 of the raw body) or the token (GitLab), compared
   in constant time -- 401 when missing, malformed or wrong;
3. only then the JSON body -- 400 when it is no JSON object -- and the event name; a push
   without a ref or with an ``after`` that is no commit id is 400 too.

A push names the ref it moved; nothing in it is trusted beyond "the forge says this ref moved":
the source fetches and checks the commit itself. Error messages name headers, never the secret
or the signature value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Provider", "PushEvent", "WebhookRejected", "verify_push"]

Provider = Literal["github", "gitea", "gitlab"]

_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
# A Git object id: SHA-1 (40 hex digits) or SHA-256 (64); forges send lower case.
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BRANCH_PREFIX = "refs/heads/"
_HUB_PREFIX = "sha256="

# GitLab names its events in the X-Gitlab-Event header; a system hook carries the kind in the
# body instead.
_GITLAB_PUSH_EVENTS = frozenset({"Push Hook", "Tag Push Hook"})
_GITLAB_SYSTEM_HOOK = "System Hook"
_GITLAB_PUSH_KINDS = frozenset({"push", "tag_push"})


class WebhookRejected(Exception):
    """A delivery that is refused: ``status`` is the HTTP status to answer (400, 401) and
    ``reason`` says what is wrong and what to do. Neither ever contains the secret or a
    signature value."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class PushEvent:
    """What a forge says a push did. ``branch`` is None for a ref outside ``refs/heads/`` (a
    tag); ``after`` is the new commit id, None when the ref was deleted or not given."""

    provider: Provider
    ref: str
    branch: str | None
    after: str | None
    deleted: bool
    repository: str | None  # "owner/name" (GitHub, Gitea) or "group/project" (GitLab)


def verify_push(headers: Mapping[str, str], body: bytes, secret: bytes) -> PushEvent | None:
    """Authenticate one webhook delivery and return its push, or None for another event.

    ``headers`` as received (names in any case; a Starlette ``Headers`` or a plain dict),
    ``body`` the raw bytes the signature covers, ``secret`` the shared secret configured in
    the forge. Raises ``WebhookRejected`` (401 unauthenticated, 400 malformed or unknown) and
    ValueError for an empty ``secret``, which would otherwise authenticate anyone.
    """
    if not secret:
        raise ValueError("the webhook secret is empty: configure a long random secret")
    fields = _fold(headers)
    provider = _provider(fields)
    if provider == "gitlab":
        _check_token(fields, secret)
    else:
        _check_signature(provider, fields, body, secret)
    # Every authenticated body is parsed, not only pushes: GitHub's ping on creating the hook
    # then already tells its author that the content type is wrong, before the first push.
    payload = _parse(body)
    if provider == "gitlab":
        event = _single(fields, "x-gitlab-event")
        if event == _GITLAB_SYSTEM_HOOK:
            is_push = payload.get("event_name", payload.get("object_kind")) in _GITLAB_PUSH_KINDS
        else:
            is_push = event in _GITLAB_PUSH_EVENTS
    else:
        is_push = _single(fields, f"x-{provider}-event") == "push"
    return _push(provider, payload) if is_push else None


def _fold(headers: Mapping[str, str]) -> dict[str, list[str]]:
    """Header names in lower case, each with every value given (a Starlette ``Headers``
    lists repeated headers in ``items()``; a dict may spell one name in two cases)."""
    fields: dict[str, list[str]] = {}
    for name, value in headers.items():
        fields.setdefault(name.lower(), []).append(value)
    return fields


def _single(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    if not values:
        return None
    if len(set(values)) > 1:
        # two different signatures or tokens: which one the forge meant cannot be known
        raise WebhookRejected(400, f"header {_title(name)} is given more than once")
    return values[0].strip()


def _provider(fields: dict[str, list[str]]) -> Provider:
    # Gitea (and Forgejo) also send X-GitHub-Event, so its own header decides first.
    if _single(fields, "x-gitea-event") is not None:
        return "gitea"
    if _single(fields, "x-gitlab-event") is not None:
        return "gitlab"
    if _single(fields, "x-github-event") is not None:
        return "github"
    raise WebhookRejected(
        400,
        "no X-GitHub-Event, X-Gitea-Event or X-Gitlab-Event header: this endpoint takes push "
        "webhooks from GitHub, Gitea or GitLab",
    )


def _check_signature(
    provider: Provider, fields: dict[str, list[str]], body: bytes, secret: bytes
) -> None:
    """Every signature header the forge sent must match; at least one must be there."""
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")
    given: list[tuple[str, str]] = []
    hub = _single(fields, "x-hub-signature-256")
    if hub:
        if not hub.startswith(_HUB_PREFIX):
            raise WebhookRejected(
                401, "malformed X-Hub-Signature-256 header: expected sha256= and 64 hex digits"
            )
        if hub[len(_HUB_PREFIX) :]:  # Gitea without a secret sends a bare "sha256="
            given.append(("X-Hub-Signature-256", hub[len(_HUB_PREFIX) :]))
    if provider == "gitea":
        bare = _single(fields, "x-gitea-signature")
        if bare:
            given.append(("X-Gitea-Signature", bare))
    if not given:
        where = "X-Hub-Signature-256" if provider == "github" else "X-Gitea-Signature"
        forge = "GitHub" if provider == "github" else "Gitea"
        raise WebhookRejected(
            401,
            f"no {where} header: set the webhook's secret in {forge} to the controller's "
            "webhook secret",
        )
    for name, value in given:
        digest = value.lower()
        if not _HEX_SHA256.fullmatch(digest):
            raise WebhookRejected(401, f"malformed {name} header: expected 64 hex digits")
        if not hmac.compare_digest(digest.encode("ascii"), expected):
            raise WebhookRejected(
                401,
                f"{name} does not match the body: the webhook's secret differs from the "
                "controller's webhook secret",
            )


def _check_token(fields: dict[str, list[str]], secret: bytes) -> None:
    token = _single(fields, "x-gitlab-token")
    if not token:
        raise WebhookRejected(
            401,
            "no X-Gitlab-Token header: set the webhook's secret token in GitLab to the "
            "controller's webhook secret",
        )
    # Compare digests, not the strings: equal lengths, so not even the length leaks.
    given = hashlib.sha256(_header_bytes(token)).digest()
    if not hmac.compare_digest(given, hashlib.sha256(secret).digest()):
        raise WebhookRejected(401, "X-Gitlab-Token does not match the controller's webhook secret")


def _header_bytes(value: str) -> bytes:
    # ASGI servers decode header bytes as Latin-1, so this gives back the bytes on the wire;
    # a str with characters beyond Latin-1 can only come from a caller, as UTF-8.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _parse(body: bytes) -> dict[str, Any]:
    """The JSON object of an authenticated body."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRejected(
            400, "the body is not JSON: set the webhook's content type to application/json"
        ) from None
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "the body is JSON but not an object: expected a push payload")
    return payload


def _push(provider: Provider, payload: dict[str, Any]) -> PushEvent:
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref:
        raise WebhookRejected(400, "the push payload has no 'ref' string")
    after = payload.get("after")
    if after is not None and (not isinstance(after, str) or not _OBJECT_ID.fullmatch(after)):
        raise WebhookRejected(400, "the push payload's 'after' is not a commit id")
    # All zeros: the ref was deleted (GitHub also says so in "deleted").
    deleted = payload.get("deleted") is True or (after is not None and not after.strip("0"))
    branch = ref[len(_BRANCH_PREFIX) :] if ref.startswith(_BRANCH_PREFIX) else None
    return PushEvent(
        provider=provider,
        ref=ref,
        branch=branch or None,
        after=None if deleted else after,
        deleted=deleted,
        repository=_repository(provider, payload),
    )


def _repository(provider: Provider, payload: dict[str, Any]) -> str | None:
    if provider == "gitlab":
        holder, key = payload.get("project"), "path_with_namespace"
    else:
        holder, key = payload.get("repository"), "full_name"
    name = holder.get(key) if isinstance(holder, dict) else None
    return name if isinstance(name, str) and name else None


def _title(name: str) -> str:
    """x-hub-signature-256 -> X-Hub-Signature-256, for messages (GitHub spells X-GitHub)."""
    return "-".join("GitHub" if part == "github" else part.capitalize() for part in name.split("-"))
