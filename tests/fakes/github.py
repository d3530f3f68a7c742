"""A stateful fake of GitHub's issue endpoints on loopback, checking every request against GitHub's spec.

Requests are checked against `github/issues.openapi.json` (the issue operations of GitHub's own
OpenAPI description): the path and method must be an operation there, path and query parameters
must have the declared types, and a JSON body must satisfy the operation's request schema (required
fields, types, enums). Anything else is answered like GitHub would and recorded as a violation. The
fake's own answers are checked against the response schemas too, so the bot is tested against
realistic issues.

Faults: `fail()` answers 401/403/404/410/422, a secondary rate limit (403 or 429 with retry-after)
or a primary one (403, x-ratelimit-remaining: 0); `hang()` delays answers (client timeouts);
`lose_answer()` does the work and then answers 502, as when a response is lost.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from types import TracebackType
from typing import Any, Literal

import jsonschema
from aiohttp import web

from tests.fakes.specs import load_spec

ISSUES_SPEC = "github/issues.openapi.json"
TOKEN = "ghp_testtoken"
DOCS = "https://docs.github.com/rest/issues/issues"
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    " If you reach out to GitHub Support for help, please include the request ID."
)
# The repository itself (GET /repos/{owner}/{repo}) is not an issue operation, so it is not in the
# cut-down spec; the adapter's ping() reads it. Its answer here follows docs.github.com/rest/repos.
EXTRA_PATHS = {("GET", "/repos/{owner}/{repo}")}


@dataclass
class GitHubCall:
    """One request the fake received and what it answered."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    operation: str | None = None
    status: int | None = None
    response: Any = None


@dataclass
class _Fault:
    status: int
    remaining: int | None
    method: str | None
    kind: Literal["error", "secondary", "primary", "hang", "lose"]
    retry_after: int | None = None
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Operation:
    """One operation of the spec: its template, method, parameters and request schema."""

    operation_id: str
    method: str
    template: str
    pattern: re.Pattern[str]
    parameters: dict[str, dict[str, Any]]
    body_schema: dict[str, Any] | None
    body_required: bool
    responses: dict[str, Any] = field(default_factory=dict)


def _openapi_to_jsonschema(node: Any) -> Any:
    """Rewrite OpenAPI 3.0's `nullable` (not JSON Schema) as an explicit null alternative."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _openapi_to_jsonschema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@cache
def _spec() -> dict[str, Any]:
    converted: dict[str, Any] = _openapi_to_jsonschema(load_spec(ISSUES_SPEC))
    return converted


@cache
def _root_validator() -> jsonschema.Draft7Validator:
    # The whole document is the root, so that `#/components/...` references resolve from any part.
    return jsonschema.Draft7Validator(_spec())


def schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    """Return why `value` does not match `schema` (a part of the spec), empty when it does."""
    validator = _root_validator().evolve(schema=schema)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<body>'}: {error.message}"
        for error in validator.iter_errors(value)
    ]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` of the spec."""
    while "$ref" in node:
        target: Any = _spec()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


@cache
def operations() -> tuple[Operation, ...]:
    """Return every operation of the spec."""
    found = []
    for template, item in _spec()["paths"].items():
        regex = "^" + re.sub(r"\\\{([a-z_]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
        for method, operation in item.items():
            parameters = {}
            for parameter in operation.get("parameters", []):
                resolved = _resolve(parameter)
                parameters[resolved["name"]] = resolved
            body = operation.get("requestBody")
            schema = body["content"]["application/json"]["schema"] if body else None
            found.append(
                Operation(
                    operation_id=operation["operationId"],
                    method=method.upper(),
                    template=template,
                    pattern=re.compile(regex),
                    parameters=parameters,
                    body_schema=schema,
                    body_required=bool(body and body.get("required")),
                    responses=operation.get("responses", {}),
                )
            )
    return tuple(found)


def _check_scalar(name: str, raw: str, schema: dict[str, Any]) -> str | None:
    """Check a path or query parameter (always text on the wire) against its declared schema."""
    schema = _resolve(schema)
    kind = schema.get("type")
    if kind == "integer" and not re.fullmatch(r"-?\d+", raw):
        return f"parameter {name}: expected an integer, got {raw!r}"
    if "enum" in schema and raw not in [str(item) for item in schema["enum"]]:
        return f"parameter {name}: {raw!r} is not one of {schema['enum']}"
    if schema.get("format") == "date-time":
        try:
            datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return f"parameter {name}: {raw!r} is not an ISO 8601 date-time"
    return None


class _Answer(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class FakeGitHub:
    """Serve GitHub's issue endpoints for one repository on 127.0.0.1, in a background thread."""

    def __init__(self, *, token: str = TOKEN, repo: str = "acme/3dpot", login: str = "chatops-bot") -> None:
        """Configure the token the fake accepts and the repository it holds."""
        self.token = token
        self.repo = repo
        self.login = login
        self.issues: dict[int, dict[str, Any]] = {}
        self.calls: list[GitHubCall] = []
        self.violations: list[str] = []
        self._faults: list[_Fault] = []
        self._numbers = itertools.count(1)
        self._ids = itertools.count(1_000_001)
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Return the API base URL (what api.github.com is in production)."""
        if self._port is None:
            raise RuntimeError("FakeGitHub is not started")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FakeGitHub:
        """Start serving on a free loopback port."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_site())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-github", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeGitHub did not start within 10 s")
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> FakeGitHub:
        """Start for a `with` block."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop at the end of a `with` block."""
        self.stop()

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    # ------------------------------------------------------------------ faults and state

    def fail(
        self,
        status: int,
        *,
        times: int | None = 1,
        method: str | None = None,
        retry_after: int | None = None,
        message: str | None = None,
        kind: Literal["error", "secondary", "primary"] = "error",
    ) -> None:
        """Answer the next `times` calls (of `method`, or any) with an error as GitHub words it.

        `kind="secondary"` is a secondary rate limit (403 or 429, retry-after when given);
        `kind="primary"` is the hourly limit (403, x-ratelimit-remaining: 0, a reset time).
        """
        with self._lock:
            self._faults.append(
                _Fault(status, times, method, kind, retry_after=retry_after, message=message or "")
            )

    def hang(self, seconds: float, *, times: int | None = 1, method: str | None = None) -> None:
        """Answer the next calls only after `seconds` (to exercise the client's timeout)."""
        with self._lock:
            self._faults.append(_Fault(0, times, method, "hang", seconds=seconds))

    def lose_answer(self, *, times: int | None = 1, method: str | None = None) -> None:
        """Do the work of the next calls, then answer 502 as if the response were lost on the way."""
        with self._lock:
            self._faults.append(_Fault(502, times, method, "lose"))

    def edit_on_github(self, number: int, body: str) -> None:
        """Change an issue's body as a person would on github.com."""
        with self._lock:
            issue = self.issues[number]
            issue["body"] = body
            issue["updated_at"] = _now()

    def calls_to(self, operation_id: str) -> list[GitHubCall]:
        """Return the answered calls of one operation (e.g. `issues/create`), oldest first."""
        with self._lock:
            return [call for call in self.calls if call.operation == operation_id]

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        call = GitHubCall(request.method, request.path, dict(request.query), body, dict(request.headers))
        with self._lock:
            self.calls.append(call)
        try:
            operation, params = self._match(call)
            call.operation = operation.operation_id if operation else "repos/get"
            self._authorize(call)
            fault = self._take_fault(call.method)
            if fault is not None and fault.kind == "hang":
                await asyncio.sleep(fault.seconds)
            elif fault is not None and fault.kind != "lose":
                raise self._fault_answer(fault)
            if operation is not None:
                self._validate(call, operation, params)
            status, answer, headers = self._apply(call, params)
            if operation is not None:
                self._check_response(operation, status, answer)
            if fault is not None and fault.kind == "lose":
                raise _Answer(502, {"message": "Server Error"})
        except _Answer as answer_error:
            return self._finish(call, answer_error.status, answer_error.body, answer_error.headers)
        return self._finish(call, status, answer, headers)

    def _finish(self, call: GitHubCall, status: int, body: Any, headers: dict[str, str]) -> web.Response:
        call.status, call.response = status, body
        reset = str(int(time.time()) + 3600)
        base = {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "4999",
            "x-ratelimit-reset": reset,
            "x-ratelimit-resource": "core",
            "x-github-api-version-selected": "2022-11-28",
        }
        base.update(headers)
        if body is None:
            return web.Response(status=status, headers=base)
        return web.json_response(body, status=status, headers=base)

    def _match(self, call: GitHubCall) -> tuple[Operation | None, dict[str, str]]:
        templates_seen = False
        for operation in operations():
            match = operation.pattern.match(call.path)
            if match is None:
                continue
            templates_seen = True
            if operation.method == call.method:
                return operation, match.groupdict()
        repo_match = re.fullmatch(r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)", call.path)
        if call.method == "GET" and repo_match is not None:
            return None, repo_match.groupdict()
        reason = f"{call.method} is not an operation of {call.path}" if templates_seen else "no such path"
        self._violate(f"{call.method} {call.path}: {reason} in {ISSUES_SPEC}")
        raise _Answer(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    def _authorize(self, call: GitHubCall) -> None:
        header = call.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or token != self.token:
            raise _Answer(
                401,
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                },
            )

    def _validate(self, call: GitHubCall, operation: Operation, params: dict[str, str]) -> None:
        problems = []
        for name, value in params.items():
            declared = operation.parameters.get(name)
            if declared is None or declared.get("in") != "path":
                problems.append(f"path parameter {name} is not declared")
                continue
            problem = _check_scalar(name, value, declared.get("schema", {}))
            if problem:
                problems.append(problem)
        for name, value in call.query.items():
            declared = operation.parameters.get(name)
            if declared is None or declared.get("in") != "query":
                problems.append(f"query parameter {name} is not declared")
                continue
            problem = _check_scalar(name, value, declared.get("schema", {}))
            if problem:
                problems.append(problem)
        if operation.body_schema is not None:
            if call.body is None and operation.body_required:
                problems.append("a JSON body is required")
            elif call.body is not None:
                if not call.headers.get("Content-Type", "").startswith("application/json"):
                    problems.append(f"body must be application/json, not {call.headers.get('Content-Type')}")
                problems += schema_errors(operation.body_schema, call.body)
        elif call.body is not None:
            problems.append("this operation takes no body")
        if problems:
            for problem in problems:
                self._violate(f"{call.method} {call.path}: {problem}")
            raise _Answer(
                422,
                {
                    "message": "Invalid request.\n\n" + "\n".join(problems),
                    "documentation_url": DOCS,
                    "status": "422",
                },
            )
        if (params.get("owner"), params.get("repo")) != tuple(self.repo.split("/")):
            raise _Answer(404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"})

    def _check_response(self, operation: Operation, status: int, answer: Any) -> None:
        """Keep the fake honest: its answers must match the spec's response schemas."""
        response = operation.responses.get(str(status))
        if response is None:
            self._violate(f"fake answered {status}, which {operation.operation_id} does not document")
            return
        response = _resolve(response)
        schema = (response.get("content") or {}).get("application/json", {}).get("schema")
        if schema is not None:
            for problem in schema_errors(schema, answer):
                self._violate(f"fake's own {operation.operation_id} answer: {problem}")

    def _violate(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method is not None and fault.method != method:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def _fault_answer(self, fault: _Fault) -> _Answer:
        headers: dict[str, str] = {}
        if fault.kind == "secondary":
            if fault.retry_after is not None:
                headers["retry-after"] = str(fault.retry_after)
            return _Answer(
                fault.status,
                {
                    "message": fault.message or SECONDARY_MESSAGE,
                    "documentation_url": DOCS,
                    "status": str(fault.status),
                },
                headers,
            )
        if fault.kind == "primary":
            headers = {
                "x-ratelimit-remaining": "0",
                "x-ratelimit-used": "5000",
                "x-ratelimit-reset": str(int(time.time()) + (fault.retry_after or 3600)),
            }
            message = "API rate limit exceeded for user ID 1."
            return _Answer(403, {"message": message, "documentation_url": DOCS, "status": "403"}, headers)
        messages = {
            401: "Bad credentials",
            403: "Resource not accessible by personal access token",
            404: "Not Found",
            410: "Issues are disabled for this repo",
            422: "Validation Failed",
        }
        body: dict[str, Any] = {
            "message": fault.message or messages.get(fault.status, "Error"),
            "documentation_url": DOCS,
            "status": str(fault.status),
        }
        if fault.status == 422:
            body["errors"] = [
                {"resource": "Issue", "code": "custom", "field": "body", "message": "body is too long"}
            ]
        return _Answer(fault.status, body, headers)

    # ------------------------------------------------------------------ the issues

    def _apply(self, call: GitHubCall, params: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            operation = call.operation
            if operation == "repos/get":
                if f"{params['owner']}/{params['repo']}" != self.repo:
                    raise _Answer(404, {"message": "Not Found", "documentation_url": DOCS})
                return 200, {"id": 1, "full_name": self.repo, "has_issues": True}, {}
            if operation == "issues/create":
                number = next(self._numbers)
                issue = self._new_issue(number, call.body)
                self.issues[number] = issue
                return 201, copy.deepcopy(issue), {"Location": issue["url"]}
            if operation in ("issues/get", "issues/update"):
                found = self.issues.get(int(params["issue_number"]))
                if found is None:
                    raise _Answer(404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"})
                if operation == "issues/update":
                    self._update(found, call.body or {})
                return 200, copy.deepcopy(found), {}
            if operation == "issues/list-for-repo":
                return 200, self._list(call.query), {}
            raise _Answer(404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"})

    def _user(self) -> dict[str, Any]:
        base = f"https://api.github.com/users/{self.login}"
        return {
            "login": self.login,
            "id": 41898282,
            "node_id": "MDQ6VXNlcjQxODk4Mjgy",
            "avatar_url": "https://avatars.githubusercontent.com/u/41898282?v=4",
            "gravatar_id": "",
            "url": base,
            "html_url": f"https://github.com/{self.login}",
            "followers_url": f"{base}/followers",
            "following_url": f"{base}/following{{/other_user}}",
            "gists_url": f"{base}/gists{{/gist_id}}",
            "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{base}/subscriptions",
            "organizations_url": f"{base}/orgs",
            "repos_url": f"{base}/repos",
            "events_url": f"{base}/events{{/privacy}}",
            "received_events_url": f"{base}/received_events",
            "type": "Bot",
            "site_admin": False,
        }

    def _label(self, name: str) -> dict[str, Any]:
        return {
            "id": abs(hash(name)) % 10_000_000,
            "node_id": f"LA_{name}",
            "url": f"https://api.github.com/repos/{self.repo}/labels/{name}",
            "name": name,
            "description": None,
            "color": "ededed",
            "default": False,
        }

    def _new_issue(self, number: int, body: dict[str, Any]) -> dict[str, Any]:
        api = f"https://api.github.com/repos/{self.repo}/issues/{number}"
        now = _now()
        return {
            "id": next(self._ids),
            "node_id": f"I_kwDO{number:08d}",
            "url": api,
            "repository_url": f"https://api.github.com/repos/{self.repo}",
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": f"https://github.com/{self.repo}/issues/{number}",
            "number": number,
            "state": "open",
            "state_reason": None,
            "title": str(body["title"]),
            "body": body.get("body"),
            "user": self._user(),
            "labels": [self._label(_label_name(item)) for item in body.get("labels") or []],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "active_lock_reason": None,
            "comments": 0,
            "closed_at": None,
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE",
        }

    def _update(self, issue: dict[str, Any], body: dict[str, Any]) -> None:
        for key in ("title", "body", "state"):
            if key in body and body[key] is not None:
                issue[key] = body[key]
        if "labels" in body:
            issue["labels"] = [self._label(_label_name(item)) for item in body["labels"] or []]
        if body.get("state") == "closed":
            issue["closed_at"] = _now()
        issue["updated_at"] = _now()

    def _list(self, query: dict[str, str]) -> list[dict[str, Any]]:
        state = query.get("state", "open")
        wanted = {item for item in query.get("labels", "").split(",") if item}
        since = query.get("since")
        found = []
        for issue in self.issues.values():
            if state != "all" and issue["state"] != state:
                continue
            if wanted and not wanted <= {label["name"] for label in issue["labels"]}:
                continue
            if since and issue["updated_at"] < since:
                continue
            found.append(copy.deepcopy(issue))
        reverse = query.get("direction", "desc") == "desc"
        found.sort(key=lambda item: item["created_at"] + f"{item['number']:010d}", reverse=reverse)
        per_page = int(query.get("per_page", "30"))
        page = int(query.get("page", "1"))
        return found[(page - 1) * per_page : page * per_page]


def _error(message: str, status: int) -> dict[str, Any]:
    return {"message": message, "documentation_url": DOCS, "status": str(status)}


def _label_name(item: Any) -> str:
    return item if isinstance(item, str) else str(item.get("name", ""))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
