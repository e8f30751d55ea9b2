"""Authentication and reading of GitHub, Gitea and GitLab push webhooks (pure, table-driven)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from starlette.datastructures import Headers

from rciots.controller import webhooks

SECRET = b"correct horse battery staple"
OTHER = b"not the secret"
OLD = "1" * 40
NEW = "a" * 40
ZERO = "0" * 40


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def dump(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def github_push(ref: str = "refs/heads/main", after: str = NEW, **extra: Any) -> bytes:
    return dump(
        {
            "ref": ref,
            "before": OLD,
            "after": after,
            "created": False,
            "deleted": after == ZERO,
            "forced": False,
            "repository": {"name": "fleet", "full_name": "acme/fleet"},
            "commits": [],
            **extra,
        }
    )


def gitlab_push(kind: str = "push", ref: str = "refs/heads/main", after: str = NEW) -> bytes:
    return dump(
        {
            "object_kind": kind,
            "event_name": kind,
            "before": OLD,
            "after": after,
            "ref": ref,
            "checkout_sha": None if after == ZERO else after,
            "project": {"name": "Fleet", "path_with_namespace": "ops/edge/fleet"},
            "commits": [],
        }
    )


def github(body: bytes, event: str = "push", secret: bytes = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-Hub-Signature-256": "sha256=" + sign(body, secret),
    }


def gitea(body: bytes, event: str = "push", secret: bytes = SECRET) -> dict[str, str]:
    """The headers Gitea sends: its own, Gogs' and GitHub's."""
    signature = sign(body, secret)
    return {
        "Content-Type": "application/json",
        "X-Gitea-Event": event,
        "X-Gitea-Event-Type": event,
        "X-Gitea-Signature": signature,
        "X-Gogs-Event": event,
        "X-Gogs-Signature": signature,
        "X-GitHub-Event": event,
        "X-Hub-Signature": "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + signature,
    }


def gitlab(event: str = "Push Hook", token: str = SECRET.decode()) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Gitlab-Event": event, "X-Gitlab-Token": token}


def without(headers: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in names}


def replaced(headers: dict[str, str], **values: str) -> dict[str, str]:
    return {**headers, **{k.replace("_", "-"): v for k, v in values.items()}}


PUSH = github_push()
LAB = gitlab_push()
PING = dump({"zen": "Keep it logically awesome.", "hook_id": 1})


def push(
    provider: webhooks.Provider,
    ref: str = "refs/heads/main",
    after: str | None = NEW,
    *,
    deleted: bool = False,
    repository: str | None = "acme/fleet",
) -> webhooks.PushEvent:
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    return webhooks.PushEvent(provider, ref, branch, after, deleted, repository)


ACCEPTED = [
    pytest.param(github(PUSH), PUSH, push("github"), id="github-push"),
    pytest.param(
        {k.lower(): v for k, v in github(PUSH).items()}, PUSH, push("github"), id="github-lower"
    ),
    pytest.param(
        {k.upper(): v for k, v in github(PUSH).items()}, PUSH, push("github"), id="github-upper"
    ),
    pytest.param(
        replaced(github(PUSH), **{"X-Hub-Signature-256": "sha256=" + sign(PUSH).upper()}),
        PUSH,
        push("github"),
        id="github-upper-case-hex",
    ),
    pytest.param(
        github(github_push("refs/heads/feature/x")),
        github_push("refs/heads/feature/x"),
        push("github", "refs/heads/feature/x"),
        id="github-other-branch",
    ),
    pytest.param(
        github(github_push("refs/tags/v1")),
        github_push("refs/tags/v1"),
        push("github", "refs/tags/v1"),
        id="github-tag",
    ),
    pytest.param(
        github(github_push(after=ZERO)),
        github_push(after=ZERO),
        push("github", after=None, deleted=True),
        id="github-branch-deleted",
    ),
    pytest.param(
        github(github_push(after="b" * 64)),
        github_push(after="b" * 64),
        push("github", after="b" * 64),
        id="github-sha256-repository",
    ),
    pytest.param(
        github(dump({"ref": "refs/heads/main", "after": NEW})),
        dump({"ref": "refs/heads/main", "after": NEW}),
        push("github", repository=None),
        id="github-no-repository",
    ),
    pytest.param(
        github(dump({"ref": "refs/heads/main"})),
        dump({"ref": "refs/heads/main"}),
        push("github", after=None, repository=None),
        id="github-no-after",
    ),
    pytest.param(github(PING, "ping"), PING, None, id="ping"),
    pytest.param(github(PUSH, "pull_request"), PUSH, None, id="github-pull-request"),
    pytest.param(gitea(PUSH), PUSH, push("gitea"), id="gitea-as-sent"),
    pytest.param(
        without(gitea(PUSH), "X-Hub-Signature-256"), PUSH, push("gitea"), id="gitea-own-signature"
    ),
    pytest.param(
        without(gitea(PUSH), "X-Gitea-Signature"), PUSH, push("gitea"), id="gitea-hub-signature"
    ),
    pytest.param(
        {
            "X-Gitea-Event": "push",
            "X-Hub-Signature-256": "sha256=" + sign(PUSH),
        },
        PUSH,
        push("gitea"),
        id="gitea-minimal",
    ),
    pytest.param(gitea(PUSH, "create"), PUSH, None, id="gitea-create"),
    pytest.param(gitlab(), LAB, push("gitlab", repository="ops/edge/fleet"), id="gitlab-push"),
    pytest.param(
        {"x-gitlab-event": "Push Hook", "x-gitlab-token": SECRET.decode()},
        LAB,
        push("gitlab", repository="ops/edge/fleet"),
        id="gitlab-lower",
    ),
    pytest.param(
        gitlab("Tag Push Hook"),
        gitlab_push("tag_push", "refs/tags/v2"),
        push("gitlab", "refs/tags/v2", repository="ops/edge/fleet"),
        id="gitlab-tag",
    ),
    pytest.param(
        gitlab(),
        gitlab_push(after=ZERO),
        push("gitlab", after=None, deleted=True, repository="ops/edge/fleet"),
        id="gitlab-branch-deleted",
    ),
    pytest.param(
        gitlab("System Hook"),
        LAB,
        push("gitlab", repository="ops/edge/fleet"),
        id="gitlab-system-push",
    ),
    pytest.param(
        gitlab("System Hook"),
        dump({"event_name": "project_create", "name": "x"}),
        None,
        id="gitlab-system-other",
    ),
    pytest.param(gitlab("Merge Request Hook"), dump({"object_kind": "merge_request"}), None),
    pytest.param(
        Headers(raw=[(k.lower().encode(), v.encode()) for k, v in github(PUSH).items()]),
        PUSH,
        push("github"),
        id="starlette-headers",
    ),
]


@pytest.mark.parametrize(("headers", "body", "expected"), ACCEPTED)
def test_accepted(headers: dict[str, str], body: bytes, expected: object) -> None:
    assert webhooks.verify_push(headers, body, SECRET) == expected


NOT_JSON = b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D"  # GitHub's form encoding
NESTED = b"[" * 100_000 + b"]" * 100_000
MISSING_GITHUB = r"^no X-Hub-Signature-256 header: set the webhook's secret in GitHub"
MISMATCH = r"^X-Hub-Signature-256 does not match the body: the webhook's secret differs"

REJECTED = [
    # provider
    pytest.param({}, PUSH, 400, r"^no X-GitHub-Event, X-Gitea-Event or X-Gitlab-Event header"),
    pytest.param(
        {"X-Gogs-Event": "push", "X-Gogs-Signature": sign(PUSH)},
        PUSH,
        400,
        r"^no X-GitHub-Event",
        id="gogs",
    ),
    # GitHub signature
    pytest.param(without(github(PUSH), "X-Hub-Signature-256"), PUSH, 401, MISSING_GITHUB),
    pytest.param(
        replaced(without(github(PUSH), "X-Hub-Signature-256"), X_Hub_Signature="sha1=" + "0" * 40),
        PUSH,
        401,
        MISSING_GITHUB,
        id="github-sha1-only",
    ),
    pytest.param(github(PUSH, secret=OTHER), PUSH, 401, MISMATCH, id="github-other-secret"),
    pytest.param(github(PUSH), PUSH + b" ", 401, MISMATCH, id="github-body-changed"),
    pytest.param(
        replaced(github(PUSH), **{"X-Hub-Signature-256": "sha256=" + "0" * 64}),
        PUSH,
        401,
        MISMATCH,
        id="github-zero-signature",
    ),
    pytest.param(
        replaced(github(PUSH), **{"X-Hub-Signature-256": sign(PUSH)}),
        PUSH,
        401,
        r"^malformed X-Hub-Signature-256 header: expected sha256= and 64 hex digits$",
        id="github-no-prefix",
    ),
    pytest.param(
        replaced(github(PUSH), **{"X-Hub-Signature-256": "sha256=" + sign(PUSH)[:-1]}),
        PUSH,
        401,
        r"^malformed X-Hub-Signature-256 header: expected 64 hex digits$",
        id="github-short",
    ),
    pytest.param(
        replaced(github(PUSH), **{"X-Hub-Signature-256": "sha256=" + "é" * 64}),
        PUSH,
        401,
        r"^malformed X-Hub-Signature-256",
        id="github-not-ascii",
    ),
    pytest.param(
        github(b"\x00" * 10, secret=OTHER), b"\x00" * 10, 401, MISMATCH, id="github-bad-unparsed"
    ),
    # Gitea signatures
    pytest.param(
        without(gitea(PUSH), "X-Gitea-Signature", "X-Hub-Signature-256"),
        PUSH,
        401,
        r"^no X-Gitea-Signature header: set the webhook's secret in Gitea",
        id="gitea-unsigned",
    ),
    pytest.param(
        replaced(gitea(PUSH), X_Gitea_Signature="", X_Hub_Signature_256="sha256="),
        PUSH,
        401,
        r"^no X-Gitea-Signature header",
        id="gitea-without-secret",
    ),
    pytest.param(
        gitea(PUSH, secret=OTHER),
        PUSH,
        401,
        r"^X-Hub-Signature-256 does not match",
        id="gitea-other-secret",
    ),
    pytest.param(
        replaced(gitea(PUSH), X_Gitea_Signature=sign(PUSH, OTHER)),
        PUSH,
        401,
        r"^X-Gitea-Signature does not match",
        id="gitea-one-of-two-wrong",
    ),
    pytest.param(
        without(gitea(PUSH, secret=OTHER), "X-Hub-Signature-256"),
        PUSH,
        401,
        r"^X-Gitea-Signature does not match",
        id="gitea-own-wrong",
    ),
    # GitLab token
    pytest.param(
        without(gitlab(), "X-Gitlab-Token"),
        LAB,
        401,
        r"^no X-Gitlab-Token header: set the webhook's secret token in GitLab",
    ),
    pytest.param(gitlab(token=""), LAB, 401, r"^no X-Gitlab-Token header", id="gitlab-empty"),
    pytest.param(
        gitlab(token=OTHER.decode()),
        LAB,
        401,
        r"^X-Gitlab-Token does not match the controller's webhook secret$",
    ),
    pytest.param(
        gitlab(token=SECRET.decode().upper()), LAB, 401, r"^X-Gitlab-Token does not match"
    ),
    pytest.param(gitlab(token=SECRET.decode()[:-1]), LAB, 401, r"^X-Gitlab-Token does not match"),
    pytest.param(
        gitlab(token=OTHER.decode()), b"not json", 401, r"^X-Gitlab-Token", id="gitlab-unparsed"
    ),
    # authenticated, but the body is no JSON object
    pytest.param(
        github(NOT_JSON),
        NOT_JSON,
        400,
        r"^the body is not JSON: set the webhook's content type to application/json$",
        id="github-form-encoded",
    ),
    pytest.param(
        github(NOT_JSON, "ping"), NOT_JSON, 400, r"^the body is not JSON", id="ping-form-encoded"
    ),
    pytest.param(github(b"\xff\xfe{"), b"\xff\xfe{", 400, r"^the body is not JSON", id="bytes"),
    pytest.param(github(NESTED), NESTED, 400, r"^the body is not JSON", id="deeply-nested"),
    pytest.param(github(b"[]"), b"[]", 400, r"^the body is JSON but not an object", id="array"),
    pytest.param(gitlab(), b"", 400, r"^the body is not JSON", id="gitlab-empty-body"),
    pytest.param(gitea(b"null"), b"null", 400, r"^the body is JSON but not an object"),
    # authenticated push without what a push needs
    pytest.param(
        github(dump({"after": NEW})),
        dump({"after": NEW}),
        400,
        r"^the push payload has no 'ref' string$",
    ),
    pytest.param(github(dump({"ref": 1})), dump({"ref": 1}), 400, r"has no 'ref'", id="ref-int"),
    pytest.param(github(dump({"ref": ""})), dump({"ref": ""}), 400, r"has no 'ref'", id="ref-0"),
    pytest.param(
        github(github_push(after="HEAD")),
        github_push(after="HEAD"),
        400,
        r"^the push payload's 'after' is not a commit id$",
    ),
    pytest.param(
        gitlab("System Hook"),
        dump({"event_name": "push"}),
        400,
        r"has no 'ref'",
        id="gitlab-system-no-ref",
    ),
    # ambiguous headers
    pytest.param(
        {**github(PUSH), "x-hub-signature-256": "sha256=" + sign(PUSH, OTHER)},
        PUSH,
        400,
        r"^header X-Hub-Signature-256 is given more than once$",
        id="two-signatures",
    ),
    pytest.param(
        Headers(
            raw=[
                (b"x-gitlab-event", b"Push Hook"),
                (b"x-gitlab-token", SECRET),
                (b"x-gitlab-token", OTHER),
            ]
        ),
        LAB,
        400,
        r"^header X-Gitlab-Token is given more than once$",
        id="two-tokens",
    ),
]


@pytest.mark.parametrize(("headers", "body", "status", "message"), REJECTED)
def test_rejected(headers: dict[str, str], body: bytes, status: int, message: str) -> None:
    with pytest.raises(webhooks.WebhookRejected, match=message) as caught:
        webhooks.verify_push(headers, body, SECRET)
    assert caught.value.status == status
    assert caught.value.reason == str(caught.value)
    # nothing secret ever reaches a message: the secret, a token or a signature value
    for text in (SECRET.decode(), sign(body), *(v for v in headers.values() if len(v) >= 40)):
        assert text.lower() not in str(caught.value).lower()


def test_an_empty_secret_never_authenticates() -> None:
    with pytest.raises(ValueError, match="the webhook secret is empty"):
        webhooks.verify_push(github(PUSH, secret=b""), PUSH, b"")


def test_same_header_twice_with_one_value_is_fine() -> None:
    headers = Headers(
        raw=[(b"x-gitlab-event", b"Push Hook"), (b"x-gitlab-token", SECRET)] * 2,
    )
    assert webhooks.verify_push(headers, LAB, SECRET) == push("gitlab", repository="ops/edge/fleet")


def test_binary_secret_and_token_bytes_on_the_wire() -> None:
    """A secret with bytes beyond ASCII: signatures cover bytes, and a GitLab token arrives as
    the bytes the forge sent (an ASGI server decodes them as Latin-1)."""
    secret = "sécret-✓".encode()
    assert webhooks.verify_push(github(PUSH, secret=secret), PUSH, secret) == push("github")
    on_the_wire = Headers(raw=[(b"x-gitlab-event", b"Push Hook"), (b"x-gitlab-token", secret)])
    expected = push("gitlab", repository="ops/edge/fleet")
    assert webhooks.verify_push(on_the_wire, LAB, secret) == expected
    as_text = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret.decode()}
    assert webhooks.verify_push(as_text, LAB, secret) == expected
