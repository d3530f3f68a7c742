"""The GitHub fake answers like GitHub and refuses what GitHub's published spec does not allow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.github import TOKEN, FakeGitHub

HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
}


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


def call(fake: FakeGitHub, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {**HEADERS, **kwargs.pop("headers", {})}
    with httpx.Client(base_url=fake.url, timeout=5) as client:
        return client.request(method, path, headers=headers, **kwargs)


def test_a_created_issue_can_be_read_updated_and_listed(github: FakeGitHub) -> None:
    created = call(github, "POST", "/repos/acme/3dpot/issues", json={"title": "RCA", "labels": ["incident"]})
    assert created.status_code == 201
    assert created.headers["Location"].endswith("/repos/acme/3dpot/issues/1")
    assert created.json()["labels"][0]["name"] == "incident"
    updated = call(github, "PATCH", "/repos/acme/3dpot/issues/1", json={"body": "new", "labels": ["x"]})
    assert updated.json()["body"] == "new" and [label["name"] for label in updated.json()["labels"]] == ["x"]
    assert call(github, "GET", "/repos/acme/3dpot/issues/1").json()["title"] == "RCA"
    listed = call(github, "GET", "/repos/acme/3dpot/issues", params={"state": "all", "per_page": "10"})
    assert [item["number"] for item in listed.json()] == [1]
    # Every answer above matched the response schemas of the spec, or the fake would have said so.
    assert github.violations == []


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "problem"),
    [
        ("POST", "/repos/acme/3dpot/issues", {"body": "no title"}, None, "'title' is a required property"),
        (
            "POST",
            "/repos/acme/3dpot/issues",
            {"title": "t", "labels": "incident"},
            None,
            "is not of type 'array'",
        ),
        ("POST", "/repos/acme/3dpot/issues", {"title": "t", "body": 3}, None, "is not of type 'string'"),
        (
            "PATCH",
            "/repos/acme/3dpot/issues/1",
            {"state": "gone"},
            None,
            "'gone' is not one of ['open', 'closed']",
        ),
        ("GET", "/repos/acme/3dpot/issues/one", None, None, "expected an integer"),
        (
            "GET",
            "/repos/acme/3dpot/issues",
            None,
            {"colour": "red"},
            "query parameter colour is not declared",
        ),
        ("GET", "/repos/acme/3dpot/issues", None, {"state": "any"}, "is not one of"),
        ("DELETE", "/repos/acme/3dpot/issues/1", None, None, "DELETE is not an operation"),
        ("GET", "/repos/acme/3dpot/pulls", None, None, "no such path"),
    ],
)
def test_requests_outside_the_spec_are_refused_and_recorded(
    github: FakeGitHub, method: str, path: str, body: Any, params: Any, problem: str
) -> None:
    call(github, "POST", "/repos/acme/3dpot/issues", json={"title": "existing"})
    response = call(github, method, path, json=body, params=params)
    assert response.status_code in (404, 422)
    assert any(problem in item for item in github.violations), github.violations


def test_a_wrong_token_gets_401_like_github(github: FakeGitHub) -> None:
    response = call(
        github,
        "POST",
        "/repos/acme/3dpot/issues",
        json={"title": "t"},
        headers={"Authorization": "Bearer no"},
    )
    assert response.status_code == 401 and response.json()["message"] == "Bad credentials"
    assert github.issues == {} and github.violations == []


def test_rate_limits_say_how_long_to_wait(github: FakeGitHub) -> None:
    github.fail(403, kind="secondary", retry_after=7)
    github.fail(429, kind="secondary", retry_after=3)
    github.fail(403, kind="primary", retry_after=120)
    first = call(github, "GET", "/repos/acme/3dpot/issues")
    assert first.status_code == 403 and first.headers["retry-after"] == "7"
    assert "secondary rate limit" in first.json()["message"]
    assert call(github, "GET", "/repos/acme/3dpot/issues").headers["retry-after"] == "3"
    primary = call(github, "GET", "/repos/acme/3dpot/issues")
    assert primary.status_code == 403 and primary.headers["x-ratelimit-remaining"] == "0"
    assert call(github, "GET", "/repos/acme/3dpot/issues").status_code == 200


def test_a_lost_answer_still_did_the_work(github: FakeGitHub) -> None:
    github.lose_answer(method="POST")
    assert call(github, "POST", "/repos/acme/3dpot/issues", json={"title": "t"}).status_code == 502
    assert list(github.issues) == [1]
