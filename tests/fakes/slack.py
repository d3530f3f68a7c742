"""A fake Slack Web API on loopback that checks every request against Slack's published spec."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl

from aiohttp import web
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from tests.fakes.specs import load_spec

WEB_API_SPEC = "slack/web_api_openapi_v2.json"

# Slack's own limits for a message (also enforced by slack_sdk's models).
MAX_MESSAGE_BLOCKS = 50
MAX_MESSAGE_TEXT = 40_000

# Fields that slack_sdk JSON-encodes into a form field; they are decoded before recording so
# that tests can assert on structures instead of strings.
JSON_FIELDS = frozenset({"blocks", "attachments", "view", "files", "metadata"})

# Slack accepts any JSON body as "form" when the spec lists application/json; multipart is
# the other encoding of Swagger 2 `formData` parameters (files.upload uses it).
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

Predicate = Callable[["SlackCall"], bool]
ResponseFactory = Callable[["SlackCall"], dict[str, Any]]


@dataclass
class SlackCall:
    """One Web API request the fake received, and what it answered."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    http_verb: str
    token: str | None
    content_type: str
    # Parameters the spec does not list: Slack ignores them, so they are only reported.
    unknown_params: list[str] = field(default_factory=list)
    status: int | None = None
    response: dict[str, Any] | None = None


@dataclass(frozen=True)
class Violation:
    """A request the fake rejected because it breaks Slack's published contract."""

    method: str
    error: str
    reason: str


@dataclass(frozen=True)
class ResponseUrlPost:
    """One POST the bot made to a `response_url` served by the fake."""

    response_id: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeFile:
    """A file uploaded through files.getUploadURLExternal + files.completeUploadExternal."""

    id: str
    filename: str
    length: int
    content: bytes | None = None
    title: str | None = None
    completed: bool = False
    channels: list[str] = field(default_factory=list)
    thread_ts: str | None = None
    initial_comment: str | None = None


@dataclass
class _Fault:
    """A programmed misbehaviour for one method ("*" = every method)."""

    method: str
    kind: Literal["error", "ratelimit", "delay"]
    remaining: int | None
    error: str = ""
    retry_after: int = 1
    seconds: float = 0.0


@dataclass(frozen=True)
class MethodSpec:
    """What the published description says about one Web API method."""

    name: str
    verbs: frozenset[str]
    consumes: frozenset[str]
    params: Mapping[str, Mapping[str, Any]]
    required: frozenset[str]
    source: str


class _Rejection(Exception):
    """Raised inside request handling to answer an error and record a violation."""

    def __init__(self, error: str, reason: str, status: int = 200, violation: bool = True) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason
        self.status = status
        self.violation = violation


def _param(name: str, location: str, type_: str, required: bool = False) -> dict[str, Any]:
    """Build a Swagger-2-style parameter object for a method missing from the spec."""
    return {"name": name, "in": location, "type": type_, "required": required}


# The OpenAPI description predates the external upload flow, so these two methods are not in
# it. Their parameters are taken from Slack's method reference (docs.slack.dev/reference/
# methods/files.getUploadURLExternal and files.completeUploadExternal): getUploadURLExternal
# requires filename + length; completeUploadExternal requires `files`, a JSON array of
# {"id", "title"?}. The array's shape is checked in _check_complete_upload.
EXTRA_METHODS: dict[str, dict[str, Any]] = {
    "files.getUploadURLExternal": {
        "verbs": ["get", "post"],
        "consumes": ["application/x-www-form-urlencoded"],
        "parameters": [
            _param("token", "header", "string", True),
            _param("filename", "formData", "string", True),
            _param("length", "formData", "integer", True),
            _param("alt_txt", "formData", "string"),
            _param("snippet_type", "formData", "string"),
        ],
    },
    "files.completeUploadExternal": {
        "verbs": ["post"],
        "consumes": ["application/x-www-form-urlencoded", "application/json"],
        "parameters": [
            _param("token", "header", "string", True),
            _param("files", "formData", "string", True),
            _param("channel_id", "formData", "string"),
            _param("channels", "formData", "string"),
            _param("initial_comment", "formData", "string"),
            _param("thread_ts", "formData", "string"),
            _param("blocks", "formData", "string"),
        ],
    },
}


def method_spec(method: str) -> MethodSpec | None:
    """Return the published description of a Web API method, or None if Slack has no such method."""
    spec = load_spec(WEB_API_SPEC)
    path = spec["paths"].get(f"/{method}")
    if path is not None:
        # Each path has exactly one operation (get or post) in this description.
        verbs = frozenset(verb.upper() for verb in path)
        operation = next(iter(path.values()))
        consumes = operation.get("consumes") or spec.get("consumes") or ["application/x-www-form-urlencoded"]
        parameters = operation.get("parameters", [])
        source = WEB_API_SPEC
    elif method in EXTRA_METHODS:
        extra = EXTRA_METHODS[method]
        verbs = frozenset(verb.upper() for verb in extra["verbs"])
        consumes = extra["consumes"]
        parameters = extra["parameters"]
        source = "docs.slack.dev method reference"
    else:
        return None
    params = {p["name"]: p for p in parameters}
    required = frozenset(p["name"] for p in parameters if p.get("required"))
    return MethodSpec(method, verbs, frozenset(consumes), params, required, source)


def validate_blocks(blocks: Any, limit: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Return why `blocks` is not valid Block Kit (empty list when valid), using slack_sdk's models."""
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except json.JSONDecodeError as exc:
            return [f"blocks is not valid JSON: {exc}"]
    if not isinstance(blocks, list):
        return [f"blocks must be a JSON array, got {type(blocks).__name__}"]
    errors: list[str] = []
    if len(blocks) > limit:
        errors.append(f"no more than {limit} items allowed [json-pointer:/blocks] ({len(blocks)} given)")
    for index, raw in enumerate(blocks):
        if not isinstance(raw, dict):
            errors.append(f"block {index} must be an object")
            continue
        try:
            block = Block.parse(raw)
            if block is None:
                # Block.parse returns None for a missing or unknown type; Slack rejects those.
                errors.append(f"block {index}: unknown block type {raw.get('type')!r}")
                continue
            block.validate_json()
        except Exception as exc:  # any model error means Slack would reject it
            errors.append(f"block {index} ({raw.get('type')}): {exc}")
    return errors


def _check_type(name: str, value: Any, type_: str | None) -> str | None:
    """Return why a parameter value does not match its declared Swagger type, if it doesn't."""
    if isinstance(value, str):
        text = value.strip()
        if type_ == "integer" and not re.fullmatch(r"-?\d+", text):
            return f"[ERROR] expected an integer for field {name}, got {value!r}"
        if type_ == "number":
            try:
                float(text)
            except ValueError:
                return f"[ERROR] expected a number for field {name}, got {value!r}"
        if type_ == "boolean" and text.lower() not in {"true", "false", "1", "0"}:
            return f"[ERROR] expected a boolean for field {name}, got {value!r}"
        return None
    # JSON bodies carry native types; a string-typed field may hold an object (blocks, view).
    if type_ == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"[ERROR] expected an integer for field {name}, got {value!r}"
    if type_ == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"[ERROR] expected a number for field {name}, got {value!r}"
    if type_ == "boolean" and not isinstance(value, (bool, int)):
        return f"[ERROR] expected a boolean for field {name}, got {value!r}"
    return None


def _truthy(value: Any) -> bool:
    """Interpret a Slack boolean parameter sent as a form string or a JSON value."""
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1"}
    return bool(value)


class FakeSlack:
    """Serve a fake Slack Web API (plus upload and response_url endpoints) on 127.0.0.1.

    Use as a context manager or call start()/stop(). The server runs in a background thread
    with its own event loop, so it works from sync tests and from pytest-asyncio tests alike.
    """

    def __init__(
        self,
        *,
        tokens: set[str] | None = None,
        team_id: str = "T0CHATOPS1",
        team_domain: str = "chatops-test",
        bot_user_id: str = "U0CHATBOT1",
        bot_id: str = "B0CHATBOT1",
        app_id: str = "A0CHATOPS1",
    ) -> None:
        """Configure the fake; `tokens=None` accepts any token that looks like a Slack token."""
        self.tokens = tokens
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self.calls: list[SlackCall] = []
        self.violations: list[Violation] = []
        self.response_posts: list[ResponseUrlPost] = []
        self.files: dict[str, FakeFile] = {}
        self.pins: set[tuple[str, str]] = set()
        self.views: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._faults: list[_Fault] = []
        self._overrides: dict[str, ResponseFactory] = {}
        self._ids = itertools.count(1)
        self._last_ts_us = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._startup_error: BaseException | None = None

        self.add_user(bot_user_id, "chatops", real_name="chatops", is_bot=True)

    # ------------------------------------------------------------------ lifecycle

    @property
    def root_url(self) -> str:
        """Return `http://127.0.0.1:PORT` of the running fake."""
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """Return the Web API base URL (ending in `/api/`) for `WebClient(base_url=...)`."""
        return f"{self.root_url}/api/"

    def start(self) -> FakeSlack:
        """Start serving on a free loopback port; return self."""
        if self._thread is not None:
            raise RuntimeError("FakeSlack already started")
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fake-slack", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeSlack did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError("FakeSlack failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        """Stop the server and its thread; in-flight (hanging) requests are cut off."""
        if self._thread is None or self._loop is None:
            return
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._thread = None
        self._loop = None
        self._runner = None

    def __enter__(self) -> FakeSlack:
        """Start the fake for a `with` block."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the fake at the end of a `with` block."""
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        """Run the aiohttp server on this thread's own event loop until stop()."""
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start_site())
        except BaseException as exc:  # reported to start() in the test thread
            self._startup_error = exc
            ready.set()
            return
        ready.set()
        self._loop.run_forever()

    async def _start_site(self) -> None:
        """Bind the aiohttp app to 127.0.0.1 on a port the OS picks."""
        # Slack takes files of up to 1 GB; the bot's cap on Slack exports has the same bound.
        app = web.Application(client_max_size=1_000_000_000)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        app.router.add_post("/response/{response_id}", self._handle_response_url)
        # A short shutdown timeout so stop() does not wait on requests told to hang.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    # ------------------------------------------------------------------ state set-up

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        is_private: bool = False,
        is_member: bool = True,
        topic: str = "",
        purpose: str = "",
    ) -> dict[str, Any]:
        """Create (or replace) a channel that conversations.info and name lookups know."""
        created = int(time.time())
        channel = {
            "id": channel_id,
            "name": name,
            "name_normalized": name,
            "is_channel": not is_private and channel_id.startswith("C"),
            "is_group": is_private,
            "is_im": channel_id.startswith("D"),
            "is_mpim": False,
            "is_private": is_private,
            "is_archived": False,
            "is_general": False,
            "is_shared": False,
            "is_ext_shared": False,
            "is_org_shared": False,
            "is_member": is_member,
            "created": created,
            "creator": self.bot_user_id,
            "context_team_id": self.team_id,
            "topic": {"value": topic, "creator": "", "last_set": 0},
            "purpose": {"value": purpose, "creator": "", "last_set": 0},
        }
        with self._lock:
            self.channels[channel_id] = channel
        return channel

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str | None = None,
        email: str | None = None,
        is_admin: bool = False,
        is_bot: bool = False,
        tz: str = "Etc/UTC",
    ) -> dict[str, Any]:
        """Create (or replace) a user that users.info answers for."""
        real = real_name or name
        user: dict[str, Any] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real,
            "tz": tz,
            "tz_label": tz,
            "tz_offset": 0,
            "is_admin": is_admin,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(time.time()),
            "profile": {
                "real_name": real,
                "real_name_normalized": real,
                "display_name": name,
                "display_name_normalized": name,
                "email": email or f"{name}@example.com",
                "team": self.team_id,
            },
        }
        if is_bot:
            user["profile"]["bot_id"] = self.bot_id
        with self._lock:
            self.users[user_id] = user
        return user

    def set_usergroup(self, usergroup_id: str, user_ids: list[str]) -> None:
        """Set the members that usergroups.users.list returns for a user group (e.g. on-call)."""
        with self._lock:
            self.usergroups[usergroup_id] = list(user_ids)

    def response_url(self, response_id: str | None = None) -> str:
        """Return a `response_url` on the fake; posts to it land in `response_posts`."""
        rid = response_id or f"R{next(self._ids):08d}"
        return f"{self.root_url}/response/{rid}"

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Return copies of the messages currently in a channel (oldest first)."""
        with self._lock:
            return [dict(m) for m in self._messages.get(channel, [])]

    # ------------------------------------------------------------------ faults and overrides

    def fail(self, method: str, error: str, *, times: int | None = None) -> None:
        """Make `method` ("*" = any) answer `{"ok": false, "error": error}`, `times` times or forever."""
        with self._lock:
            self._faults.append(_Fault(method, "error", times, error=error))

    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        """Make the next `times` calls to `method` answer HTTP 429 with a Retry-After header."""
        with self._lock:
            self._faults.append(_Fault(method, "ratelimit", times, retry_after=retry_after))

    def hang(self, method: str, seconds: float, *, times: int | None = 1) -> None:
        """Make `method` wait `seconds` before answering (to exercise client timeouts)."""
        with self._lock:
            self._faults.append(_Fault(method, "delay", times, seconds=seconds))

    def clear_faults(self) -> None:
        """Remove every programmed fault."""
        with self._lock:
            self._faults.clear()

    def respond_with(self, method: str, response: dict[str, Any] | ResponseFactory) -> None:
        """Answer a (spec-valid) call to `method` with a fixed payload or `response(call)`."""
        factory: ResponseFactory = response if callable(response) else (lambda _call: dict(response))
        with self._lock:
            self._overrides[method] = factory

    def reset(self) -> None:
        """Forget recorded calls, violations and response_url posts (state and faults stay)."""
        with self._lock:
            self.calls.clear()
            self.violations.clear()
            self.response_posts.clear()

    # ------------------------------------------------------------------ inspection

    def calls_to(self, method: str) -> list[SlackCall]:
        """Return the recorded calls to one Web API method, oldest first."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for_call(
        self, method: str, predicate: Predicate | None = None, timeout: float = 5.0
    ) -> SlackCall:
        """Block until a call to `method` matching `predicate` was answered; return the first such."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self._find_call(method, predicate)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(self._timeout_message(method, timeout))
                self._changed.wait(remaining)

    async def wait_for_call_async(
        self, method: str, predicate: Predicate | None = None, timeout: float = 5.0
    ) -> SlackCall:
        """Await a call to `method` matching `predicate` without blocking the test's event loop."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = self._find_call(method, predicate)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(self._timeout_message(method, timeout))
            await asyncio.sleep(0.01)

    def wait_for_response_post(
        self,
        response_id: str | None = None,
        predicate: Callable[[ResponseUrlPost], bool] | None = None,
        timeout: float = 5.0,
    ) -> ResponseUrlPost:
        """Block until the bot posted to a response_url (optionally one id / matching predicate)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self._find_post(response_id, predicate)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no response_url post within {timeout}s; got {self.response_posts!r}"
                    )
                self._changed.wait(remaining)

    async def wait_for_response_post_async(
        self,
        response_id: str | None = None,
        predicate: Callable[[ResponseUrlPost], bool] | None = None,
        timeout: float = 5.0,
    ) -> ResponseUrlPost:
        """Await a response_url post without blocking the test's event loop."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = self._find_post(response_id, predicate)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(f"no response_url post within {timeout}s; got {self.response_posts!r}")
            await asyncio.sleep(0.01)

    def _find_call(self, method: str, predicate: Predicate | None) -> SlackCall | None:
        """Return the first answered call to `method` that matches `predicate` (lock held)."""
        for call in self.calls:
            if call.method == method and call.response is not None and (predicate is None or predicate(call)):
                return call
        return None

    def _find_post(
        self, response_id: str | None, predicate: Callable[[ResponseUrlPost], bool] | None
    ) -> ResponseUrlPost | None:
        """Return the first response_url post that matches (lock held)."""
        for post in self.response_posts:
            if (response_id is None or post.response_id == response_id) and (
                predicate is None or predicate(post)
            ):
                return post
        return None

    def _timeout_message(self, method: str, timeout: float) -> str:
        """Describe what was recorded, so a timed-out wait explains itself."""
        seen = [(c.method, c.params) for c in self.calls]
        return (
            f"no matching {method} call within {timeout}s; calls: {seen!r}; violations: {self.violations!r}"
        )

    # ------------------------------------------------------------------ HTTP handlers

    async def _handle_api(self, request: web.Request) -> web.Response:
        """Validate one Web API request against the spec, apply faults, and answer it."""
        method = request.match_info["method"]
        verb = request.method.upper()
        content_type = request.content_type if request.body_exists else ""
        headers = dict(request.headers)
        try:
            params = await self._read_params(request)
        except ValueError as exc:
            params = {}
            parse_error: str | None = str(exc)
        else:
            parse_error = None
        token = _bearer(headers.get("Authorization")) or _as_str(params.pop("token", None))
        call = SlackCall(method, params, headers, verb, token, content_type)
        with self._changed:
            self.calls.append(call)

        try:
            if parse_error is not None:
                raise _Rejection("invalid_form_data", parse_error)
            spec = self._validate(call)
            fault_response = await self._apply_faults(method)
            if fault_response is not None:
                return self._finish(call, fault_response[0], fault_response[1], fault_response[2])
            override = self._overrides.get(method)
            if override is not None:
                body = override(call)
            else:
                handler = getattr(self, "_api_" + method.replace(".", "_"), None)
                body = handler(call, spec) if handler is not None else {"ok": True}
        except _Rejection as rejection:
            if rejection.violation:
                with self._lock:
                    self.violations.append(Violation(method, rejection.error, rejection.reason))
            body = {"ok": False, "error": rejection.error}
            if rejection.error == "invalid_blocks":
                body["errors"] = [rejection.reason]
            body["response_metadata"] = {"messages": [rejection.reason]}
            return self._finish(call, rejection.status, body, {})
        return self._finish(call, 200, body, {})

    def _finish(
        self, call: SlackCall, status: int, body: dict[str, Any], headers: dict[str, str]
    ) -> web.Response:
        """Record the answer on the call, wake waiters, and build the HTTP response."""
        with self._changed:
            call.status = status
            call.response = body
            self._changed.notify_all()
        return web.json_response(body, status=status, headers=headers)

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        """Merge query string and body (form, multipart or JSON) into one dict, decoding JSON fields."""
        params: dict[str, Any] = dict(request.query)
        if request.body_exists:
            ctype = request.content_type
            if ctype == "application/json":
                try:
                    body = json.loads(await request.read() or b"{}")
                except json.JSONDecodeError as exc:
                    raise ValueError(f"body is not valid JSON: {exc}") from exc
                if not isinstance(body, dict):
                    raise ValueError("JSON body must be an object")
                params.update(body)
            elif ctype == "multipart/form-data":
                form = await request.post()
                for key, value in form.items():
                    params[key] = value.file.read() if isinstance(value, web.FileField) else value
            else:
                raw = (await request.read()).decode("utf-8")
                params.update(parse_qsl(raw, keep_blank_values=True))
        for key in JSON_FIELDS & params.keys():
            value = params[key]
            if isinstance(value, str) and value[:1] in "[{":
                # Invalid JSON stays a string: the block / view checks report it.
                with contextlib.suppress(json.JSONDecodeError):
                    params[key] = json.loads(value)
        return params

    def _validate(self, call: SlackCall) -> MethodSpec:
        """Check a call against the published spec and Slack's documented rules; raise _Rejection."""
        spec = method_spec(call.method)
        if spec is None:
            raise _Rejection("unknown_method", f"[ERROR] unknown method {call.method}")
        # Slack serves every Web API method on both GET and POST, and slack_sdk POSTs methods
        # the spec lists as GET (auth.test, views.open), so only other verbs are errors.
        if call.http_verb not in {"GET", "POST"}:
            raise _Rejection(
                "method_not_allowed",
                f"[ERROR] HTTP {call.http_verb} is not allowed; {call.method} is documented as "
                f"{'/'.join(sorted(spec.verbs))}",
                status=405,
            )
        if call.content_type:
            accepted = set(spec.consumes)
            if accepted & FORM_TYPES:
                accepted |= FORM_TYPES
            if call.content_type not in accepted:
                # Slack ignores a JSON body on methods that only take form data, so every
                # argument would silently be missing.
                raise _Rejection(
                    "invalid_arguments",
                    f"[ERROR] {call.method} does not accept {call.content_type} bodies "
                    f"(spec consumes {sorted(spec.consumes)})",
                )
        if "token" in spec.params or spec.required & {"token"}:
            if not call.token:
                raise _Rejection(
                    "not_authed", "[ERROR] no token: send Authorization: Bearer or a token param"
                )
            if not self._token_ok(call.token):
                raise _Rejection(
                    "invalid_auth", f"[ERROR] token {call.token[:9]}... is not accepted by the fake"
                )
        missing = sorted(n for n in spec.required - {"token"} if call.params.get(n) in (None, ""))
        if missing:
            raise _Rejection(
                "invalid_arguments", "; ".join(f"[ERROR] missing required field: {n}" for n in missing)
            )
        for name, value in call.params.items():
            declared = spec.params.get(name)
            if declared is None:
                call.unknown_params.append(name)
                continue
            problem = _check_type(name, value, declared.get("type"))
            if problem:
                raise _Rejection("invalid_arguments", problem)
        self._validate_content(call)
        return spec

    def _validate_content(self, call: SlackCall) -> None:
        """Apply the content rules Slack documents per method (blocks, text, views, files)."""
        params = call.params
        if call.method in {"chat.postMessage", "chat.postEphemeral", "chat.update", "chat.scheduleMessage"}:
            if "blocks" in params:
                errors = validate_blocks(params["blocks"])
                if errors:
                    raise _Rejection("invalid_blocks", "; ".join(errors))
            if call.method != "chat.update" and not any(
                params.get(k) for k in ("text", "blocks", "attachments")
            ):
                raise _Rejection("no_text", "[ERROR] one of text, blocks or attachments is required")
            if len(str(params.get("text") or "")) > MAX_MESSAGE_TEXT:
                raise _Rejection("msg_too_long", f"[ERROR] text exceeds {MAX_MESSAGE_TEXT} characters")
        elif call.method in {"views.open", "views.update", "views.push", "views.publish"}:
            if call.method == "views.update" and not (params.get("view_id") or params.get("external_id")):
                raise _Rejection("invalid_arguments", "[ERROR] views.update needs view_id or external_id")
            if "view" in params:
                self._check_view(params["view"])
        elif call.method == "files.completeUploadExternal":
            _check_complete_upload(params.get("files"))
            if "blocks" in params:
                errors = validate_blocks(params["blocks"])
                if errors:
                    raise _Rejection("invalid_blocks", "; ".join(errors))

    def _check_view(self, view: Any) -> None:
        """Reject a view payload that Slack's View model or Block Kit limits refuse."""
        if not isinstance(view, dict):
            raise _Rejection("invalid_arguments", "[ERROR] view must be a JSON object")
        errors = validate_blocks(view.get("blocks", []), limit=View.blocks_max_length)
        if errors:
            raise _Rejection("invalid_blocks", "; ".join(errors))
        try:
            View(**view).validate_json()
        except Exception as exc:  # any model error means Slack would reject it
            raise _Rejection("invalid_arguments", f"[ERROR] invalid view: {exc}") from exc

    def _token_ok(self, token: str) -> bool:
        """Accept the configured tokens, or by default anything shaped like a Slack token."""
        if self.tokens is not None:
            return token in self.tokens
        return token.startswith(("xoxb-", "xoxp-", "xoxa-", "xapp-", "xoxe"))

    async def _apply_faults(self, method: str) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """Run programmed faults for `method`; return (status, body, headers) to answer instead."""
        delay = 0.0
        answer: tuple[int, dict[str, Any], dict[str, str]] | None = None
        with self._lock:
            for fault in list(self._faults):
                if fault.method not in {method, "*"}:
                    continue
                if fault.kind == "delay":
                    delay += fault.seconds
                elif answer is None and fault.kind == "ratelimit":
                    answer = (
                        429,
                        {"ok": False, "error": "ratelimited"},
                        {"Retry-After": str(fault.retry_after)},
                    )
                elif answer is None and fault.kind == "error":
                    answer = (200, {"ok": False, "error": fault.error}, {})
                else:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
        if delay:
            await asyncio.sleep(delay)
        return answer

    async def _handle_upload(self, request: web.Request) -> web.Response:
        """Store the bytes POSTed to an upload_url handed out by files.getUploadURLExternal."""
        file_id = request.match_info["file_id"]
        data = await request.read()
        with self._changed:
            fake_file = self.files.get(file_id)
            if fake_file is None:
                return web.Response(status=404, text="file not found", content_type="text/plain")
            if len(data) != fake_file.length:
                self.violations.append(
                    Violation(
                        "upload",
                        "length_mismatch",
                        f"uploaded {len(data)} bytes, declared {fake_file.length}",
                    )
                )
            fake_file.content = data
            self._changed.notify_all()
        # Slack's upload host answers in plain text; slack_sdk only looks at the status.
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        """Record a message the bot posted to a response_url, rejecting invalid blocks like Slack."""
        response_id = request.match_info["response_id"]
        try:
            body = json.loads(await request.read() or b"{}")
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            with self._lock:
                self.violations.append(
                    Violation("response_url", "invalid_payload", "body must be a JSON object")
                )
            return web.Response(status=400, text="invalid_payload", content_type="text/plain")
        errors = validate_blocks(body["blocks"]) if "blocks" in body else []
        with self._changed:
            self.response_posts.append(ResponseUrlPost(response_id, body, dict(request.headers)))
            if errors:
                self.violations.append(Violation("response_url", "invalid_blocks", "; ".join(errors)))
            self._changed.notify_all()
        if errors:
            return web.Response(status=400, text="invalid_blocks", content_type="text/plain")
        return web.json_response({"ok": True})

    # ------------------------------------------------------------------ method implementations

    def _next_ts(self) -> str:
        """Return a unique, increasing message timestamp in Slack's `seconds.micros` form."""
        with self._lock:
            now_us = int(time.time() * 1_000_000)
            self._last_ts_us = max(now_us, self._last_ts_us + 1)
            return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    def _new_id(self, prefix: str) -> str:
        """Return a new Slack-style object id such as `F00000012`."""
        return f"{prefix}{next(self._ids):08d}"

    def _resolve_channel(self, channel: str) -> str:
        """Map `#name` to a known channel id and remember channels the bot posts into."""
        with self._lock:
            if channel.startswith("#"):
                for cid, info in self.channels.items():
                    if info["name"] == channel[1:]:
                        return cid
            if channel not in self.channels and re.fullmatch(r"[CGD][A-Z0-9]+", channel):
                self.add_channel(channel, channel.lower())
        return channel

    def _find_message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """Return the stored message with this ts in this channel (lock held by caller)."""
        for message in self._messages.get(channel, []):
            if message["ts"] == ts:
                return message
        return None

    def _api_auth_test(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Answer auth.test like Slack does for a bot token."""
        return {
            "ok": True,
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_domain,
            "user": "chatops",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _message(self, params: dict[str, Any], ts: str) -> dict[str, Any]:
        """Build the message object Slack stores and echoes for a bot post."""
        message: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": params.get("text") or "",
            "ts": ts,
        }
        for key in ("blocks", "attachments", "metadata"):
            if params.get(key):
                message[key] = params[key]
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        return message

    def _api_chat_postMessage(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Store the message (and thread bookkeeping) and echo it back."""
        channel = self._resolve_channel(str(call.params["channel"]))
        ts = self._next_ts()
        message = self._message(call.params, ts)
        with self._lock:
            thread_ts = message.get("thread_ts")
            if thread_ts:
                parent = self._find_message(channel, thread_ts)
                if parent is not None:
                    parent.setdefault("thread_ts", thread_ts)
                    parent["reply_count"] = parent.get("reply_count", 0) + 1
                    parent["latest_reply"] = ts
                    parent["reply_users"] = sorted({*parent.get("reply_users", []), self.bot_user_id})
            self._messages.setdefault(channel, []).append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": dict(message)}

    def _api_chat_postEphemeral(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Answer with a message_ts; ephemeral messages are not stored in the channel."""
        self._resolve_channel(str(call.params["channel"]))
        return {"ok": True, "message_ts": self._next_ts()}

    def _api_chat_update(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Replace the text/blocks of a stored message."""
        channel = self._resolve_channel(str(call.params["channel"]))
        ts = str(call.params["ts"])
        with self._lock:
            message = self._find_message(channel, ts)
            if message is None:
                return {"ok": False, "error": "message_not_found"}
            for key in ("text", "blocks", "attachments", "metadata"):
                if key in call.params:
                    message[key] = call.params[key]
            message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
            echoed = dict(message)
        return {"ok": True, "channel": channel, "ts": ts, "text": echoed["text"], "message": echoed}

    def _api_chat_delete(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Delete a stored message."""
        channel = self._resolve_channel(str(call.params.get("channel") or ""))
        ts = str(call.params.get("ts") or "")
        with self._lock:
            message = self._find_message(channel, ts)
            if message is None:
                return {"ok": False, "error": "message_not_found"}
            self._messages[channel].remove(message)
            self.pins.discard((channel, ts))
        return {"ok": True, "channel": channel, "ts": ts}

    def _api_pins_add(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Pin a stored message."""
        channel = self._resolve_channel(str(call.params["channel"]))
        ts = call.params.get("timestamp")
        if not ts:
            return {"ok": False, "error": "no_item_specified"}
        with self._lock:
            if self._find_message(channel, str(ts)) is None:
                return {"ok": False, "error": "message_not_found"}
            if (channel, str(ts)) in self.pins:
                return {"ok": False, "error": "already_pinned"}
            self.pins.add((channel, str(ts)))
        return {"ok": True}

    def _api_conversations_info(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Answer for a channel added with add_channel() or posted into."""
        channel_id = str(call.params.get("channel") or "")
        with self._lock:
            channel = self.channels.get(channel_id)
            if channel is None:
                return {"ok": False, "error": "channel_not_found"}
            info = dict(channel)
            if _truthy(call.params.get("include_num_members", False)):
                info["num_members"] = 1
        return {"ok": True, "channel": info}

    def _api_conversations_open(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Open (or resume) a DM with one user: a D channel id derived from the user id."""
        users = [user for user in str(call.params.get("users") or "").split(",") if user]
        if len(users) != 1:
            return {"ok": False, "error": "users_list_not_supplied" if not users else "not_supported"}
        channel_id = "D" + users[0][1:]
        if channel_id not in self.channels:
            self.add_channel(channel_id, f"dm-{users[0].lower()}", is_private=True)
        return {"ok": True, "channel": {"id": channel_id}}

    def _api_conversations_replies(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Return a thread (parent first) from what was posted."""
        channel = str(call.params.get("channel") or "")
        ts = str(call.params.get("ts") or "")
        with self._lock:
            if channel not in self.channels:
                return {"ok": False, "error": "channel_not_found"}
            parent = self._find_message(channel, ts)
            if parent is None:
                return {"ok": False, "error": "thread_not_found"}
            replies = [m for m in self._messages[channel] if m.get("thread_ts") == ts and m["ts"] != ts]
            messages = [dict(parent)] + [dict(m) for m in replies]
        return {"ok": True, "messages": messages, "has_more": False, "response_metadata": {"next_cursor": ""}}

    def _api_users_info(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Answer for a user added with add_user()."""
        with self._lock:
            user = self.users.get(str(call.params.get("user") or ""))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user}

    def _api_usergroups_users_list(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Answer with the membership set by set_usergroup()."""
        with self._lock:
            members = self.usergroups.get(str(call.params["usergroup"]))
        if members is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(members)}

    def _store_view(
        self, view: dict[str, Any], view_id: str, previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Build the full view object Slack returns, keeping the id and rotating the hash."""
        stored = {
            "id": view_id,
            "team_id": self.team_id,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            "type": view.get("type"),
            "title": view.get("title"),
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", (previous or {}).get("external_id", "")),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{next(self._ids):08d}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": (previous or {}).get("root_view_id", view_id),
            "previous_view_id": None,
        }
        with self._lock:
            self.views[view_id] = stored
        return dict(stored)

    def _api_views_open(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Open a modal and return it with a new view id."""
        return {"ok": True, "view": self._store_view(call.params["view"], self._new_id("V"), None)}

    def _api_views_push(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Push a modal onto the stack; same shape as views.open."""
        return self._api_views_open(call, spec)

    def _api_views_update(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Replace an open view, honouring `hash` like Slack (hash_conflict when stale)."""
        view_id = call.params.get("view_id")
        external_id = call.params.get("external_id")
        with self._lock:
            if view_id:
                previous = self.views.get(str(view_id))
            else:
                previous = next((v for v in self.views.values() if v["external_id"] == external_id), None)
            if previous is None:
                return {"ok": False, "error": "not_found"}
            if call.params.get("hash") and call.params["hash"] != previous["hash"]:
                return {"ok": False, "error": "hash_conflict"}
        if "view" not in call.params:
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "view": self._store_view(call.params["view"], previous["id"], previous)}

    def _api_files_getUploadURLExternal(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Reserve a file id and hand out an upload URL on the fake itself."""
        file_id = self._new_id("F")
        with self._lock:
            self.files[file_id] = FakeFile(
                id=file_id, filename=str(call.params["filename"]), length=int(call.params["length"])
            )
        return {"ok": True, "upload_url": f"{self.root_url}/upload/{file_id}", "file_id": file_id}

    def _api_files_completeUploadExternal(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Finish uploads, share them into the channel(s) and return file objects."""
        entries: list[dict[str, Any]] = call.params["files"]
        channels = [c for c in str(call.params.get("channels") or "").split(",") if c]
        if call.params.get("channel_id"):
            channels.append(str(call.params["channel_id"]))
        thread_ts = call.params.get("thread_ts")
        results = []
        with self._lock:
            for entry in entries:
                fake_file = self.files.get(entry["id"])
                if fake_file is None or fake_file.content is None:
                    return {"ok": False, "error": "file_not_found"}
            ts = self._next_ts() if channels else None
            for entry in entries:
                fake_file = self.files[entry["id"]]
                fake_file.title = entry.get("title") or fake_file.filename
                fake_file.completed = True
                fake_file.channels = [self._resolve_channel(c) for c in channels]
                fake_file.thread_ts = str(thread_ts) if thread_ts else None
                fake_file.initial_comment = call.params.get("initial_comment")
                results.append(self._file_object(fake_file, ts))
            for channel in channels:
                share = self._message(
                    {"text": call.params.get("initial_comment"), "thread_ts": thread_ts}, ts or ""
                )
                share["files"] = results
                share["upload"] = True
                self._messages.setdefault(self._resolve_channel(channel), []).append(share)
        return {"ok": True, "files": results}

    def _file_object(self, fake_file: FakeFile, share_ts: str | None) -> dict[str, Any]:
        """Build the file object Slack returns for a completed upload."""
        base = f"https://files.slack.com/files-pri/{self.team_id}-{fake_file.id}"
        shares: dict[str, Any] = {}
        if share_ts:
            key = "private" if any(c.startswith(("G", "D")) for c in fake_file.channels) else "public"
            shares[key] = {c: [{"ts": share_ts, "reply_count": 0}] for c in fake_file.channels}
        return {
            "id": fake_file.id,
            "created": int(time.time()),
            "timestamp": int(time.time()),
            "name": fake_file.filename,
            "title": fake_file.title,
            "mimetype": "text/plain",
            "filetype": "text",
            "user": self.bot_user_id,
            "size": len(fake_file.content or b""),
            "url_private": f"{base}/{fake_file.filename}",
            "url_private_download": f"{base}/download/{fake_file.filename}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{self.bot_user_id}/{fake_file.id}",
            "channels": [c for c in fake_file.channels if c.startswith("C")],
            "groups": [c for c in fake_file.channels if c.startswith("G")],
            "ims": [c for c in fake_file.channels if c.startswith("D")],
            "shares": shares,
        }


def _check_complete_upload(files: Any) -> None:
    """Enforce the documented shape of completeUploadExternal's `files`: [{"id", "title"?}, ...]."""
    if not isinstance(files, list) or not files:
        raise _Rejection("invalid_arguments", "[ERROR] files must be a non-empty JSON array")
    for index, entry in enumerate(files):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise _Rejection("invalid_arguments", f"[ERROR] files[{index}] needs a string id")
        if "title" in entry and not isinstance(entry["title"], str):
            raise _Rejection("invalid_arguments", f"[ERROR] files[{index}].title must be a string")


def _bearer(header: str | None) -> str | None:
    """Extract the token from an `Authorization: Bearer ...` header."""
    if header and header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def _as_str(value: Any) -> str | None:
    """Return a string parameter value or None."""
    return value if isinstance(value, str) and value else None
