"""A fake Slack Web API on loopback that checks every request against Slack's published spec."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_sdk.models.views import View

from tests.fakes.slack.documented import GENERIC_ERRORS
from tests.fakes.slack.limits import Clock, RateLimiter, ResponseUrlBook, default_clock
from tests.fakes.slack.methods import WebApiMethods
from tests.fakes.slack.models import (
    FakeFile,
    Fault,
    Rejection,
    ResponseUrlPost,
    SlackCall,
    Violation,
)
from tests.fakes.slack.spec import (
    FORM_TYPES,
    JSON_FIELDS,
    MAX_MESSAGE_TEXT,
    MethodSpec,
    as_str,
    bearer,
    check_complete_upload,
    check_type,
    method_spec,
    validate_blocks,
)
from tests.fakes.slack.state import manifest_bot_scopes

Predicate = Callable[[SlackCall], bool]
ResponseFactory = Callable[[SlackCall], dict[str, Any]]


class FakeSlack(WebApiMethods):
    """Serve a fake Slack Web API (plus upload and response_url endpoints) on 127.0.0.1.

    Use as a context manager or call start()/stop(). The server runs in a background thread
    with its own event loop, so it works from sync tests and from pytest-asyncio tests alike.

    As Slack does, on its own: it answers not_in_channel / channel_not_found / is_archived from
    the channels it holds (state.py), 429 with Retry-After past a method's rate tier (limits.py;
    `rate_limits=False` turns that off, `rate_scale` multiplies every limit), and 404 to a
    response_url used five times or older than thirty minutes. `clock` (time.monotonic unless
    given, e.g. limits.ManualClock) drives the last two.
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
        scopes: Iterable[str] | None = None,
        strict_channels: bool = False,
        rate_limits: bool = True,
        rate_scale: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        """Configure the fake; `tokens=None` accepts any token that looks like a Slack token.

        `scopes` are the bot token's scopes (default: the bot scopes app.yaml asks for).
        """
        self.tokens = tokens
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.scopes = frozenset(scopes) if scopes is not None else manifest_bot_scopes()
        self.strict_channels = strict_channels
        self.clock = clock or default_clock
        self._limiter = RateLimiter(self.clock, rate_scale) if rate_limits else None

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self.calls: list[SlackCall] = []
        self.violations: list[Violation] = []
        self.response_posts: list[ResponseUrlPost] = []
        self.files: dict[str, FakeFile] = {}
        self.pins: set[tuple[str, str]] = set()
        self.views: dict[str, dict[str, Any]] = {}
        # Each channel's bookmarks (bookmarks.add), and each user's published Home tab (views.publish).
        self.bookmarks: dict[str, list[dict[str, Any]]] = {}
        self.home_views: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.channel_members: dict[str, list[str]] = {}
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._faults: list[Fault] = []
        self._overrides: dict[str, ResponseFactory] = {}
        self._ids = itertools.count(1)
        self._last_ts_us = 0
        self._response_urls = ResponseUrlBook(self.clock)

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

    # ------------------------------------------------------------------ faults and overrides

    def fail(self, method: str, error: str, *, times: int | None = None) -> None:
        """Make `method` ("*" = any) answer `{"ok": false, "error": error}`, `times` times or forever.

        Only an error Slack documents for that method may be injected (ValueError otherwise): a
        test of the bot's handling of an error Slack never sends proves nothing.
        """
        if method == "*":
            allowed = GENERIC_ERRORS
        else:
            spec = method_spec(method)
            if spec is None:
                raise ValueError(f"Slack has no Web API method {method!r}")
            allowed = spec.errors
        if error not in allowed:
            raise ValueError(f"Slack does not answer {error!r} for {method}; it documents {sorted(allowed)}")
        with self._lock:
            self._faults.append(Fault(method, "error", times, error=error))

    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        """Make the next `times` calls to `method` answer HTTP 429 with a Retry-After header."""
        with self._lock:
            self._faults.append(Fault(method, "ratelimit", times, retry_after=retry_after))

    def hang(self, method: str, seconds: float, *, times: int | None = 1) -> None:
        """Make `method` wait `seconds` before answering (to exercise client timeouts)."""
        with self._lock:
            self._faults.append(Fault(method, "delay", times, seconds=seconds))

    def set_rate_limits(self, enabled: bool = True, *, scale: float = 1.0) -> None:
        """Turn Slack's rate limits on (afresh, every bucket full) or off, e.g. for a shared fixture."""
        with self._lock:
            self._limiter = RateLimiter(self.clock, scale) if enabled else None

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
        """Forget recorded calls, violations and response_url posts (state, limits and faults stay)."""
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
        """Return the first answered call to `method` that matches `predicate` (lock held).

        A call answered 429 is skipped: the client sends it again, and the test waits for the
        call Slack took (calls_to() still lists every attempt).
        """
        for call in self.calls:
            if (
                call.method == method
                and call.response is not None
                and call.status != 429
                and (predicate is None or predicate(call))
            ):
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
        """Validate one Web API request against the spec, apply faults and limits, and answer it."""
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
        token = bearer(headers.get("Authorization")) or as_str(params.pop("token", None))
        call = SlackCall(method, params, headers, verb, token, content_type)
        with self._changed:
            self.calls.append(call)

        try:
            if parse_error is not None:
                raise Rejection("invalid_form_data", parse_error)
            spec = self._validate(call)
            fault_response = await self._apply_faults(method)
            if fault_response is not None:
                return self._finish(call, fault_response[0], fault_response[1], fault_response[2])
            retry_after = self._rate_limited(call)
            if retry_after is not None:
                body = {"ok": False, "error": "ratelimited"}
                return self._finish(call, 429, body, {"Retry-After": str(retry_after)})
            override = self._overrides.get(method)
            if override is not None:
                body = override(call)
            else:
                handler = getattr(self, "_api_" + method.replace(".", "_"), None)
                body = handler(call, spec) if handler is not None else {"ok": True}
        except Rejection as rejection:
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
            self._check_documented(call, status, body)
            self._changed.notify_all()
        return web.json_response(body, status=status, headers=headers)

    def _check_documented(self, call: SlackCall, status: int, body: dict[str, Any]) -> None:
        """Record it when the fake itself (or a respond_with override) answers an undocumented error."""
        spec = method_spec(call.method)
        error = body.get("error")
        if status == 200 and body.get("ok") is False and spec is not None and error not in spec.errors:
            self.violations.append(
                Violation(
                    call.method,
                    "undocumented_error",
                    f"the fake answered {error!r}, which Slack does not document for {call.method}",
                )
            )

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
        """Check a call against the published spec and Slack's documented rules; raise Rejection."""
        spec = method_spec(call.method)
        if spec is None:
            raise Rejection("unknown_method", f"[ERROR] unknown method {call.method}")
        # Slack serves every Web API method on both GET and POST, and slack_sdk POSTs methods
        # the spec lists as GET (auth.test, views.open), so only other verbs are errors.
        if call.http_verb not in {"GET", "POST"}:
            raise Rejection(
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
                raise Rejection(
                    "invalid_arguments",
                    f"[ERROR] {call.method} does not accept {call.content_type} bodies "
                    f"(spec consumes {sorted(spec.consumes)})",
                )
        if "token" in spec.params or spec.required & {"token"}:
            if not call.token:
                raise Rejection("not_authed", "[ERROR] no token: send Authorization: Bearer or a token param")
            if not self._token_ok(call.token):
                raise Rejection("invalid_auth", f"[ERROR] token {call.token[:9]}... is not accepted here")
            if call.method == "apps.connections.open" and not call.token.startswith("xapp-"):
                # "An app-level token" (docs.slack.dev/reference/methods/apps.connections.open).
                raise Rejection("not_allowed_token_type", "[ERROR] it takes an app-level (xapp-) token")
        missing = sorted(n for n in spec.required - {"token"} if call.params.get(n) in (None, ""))
        if missing:
            raise Rejection(
                "invalid_arguments", "; ".join(f"[ERROR] missing required field: {n}" for n in missing)
            )
        for name, value in call.params.items():
            declared = spec.params.get(name)
            if declared is None:
                # Slack ignores it, so the call goes on; but nothing the bot sends should be
                # ignored: a misspelt argument is a silent bug against real Slack.
                call.unknown_params.append(name)
                with self._lock:
                    self.violations.append(
                        Violation(
                            call.method,
                            "unknown_param",
                            f"[WARN] {name} is not an argument of {call.method} ({spec.source}); "
                            "Slack would ignore it",
                        )
                    )
                continue
            problem = check_type(name, value, declared.get("type"))
            if problem:
                raise Rejection("invalid_arguments", problem)
        self._validate_content(call)
        return spec

    def _validate_content(self, call: SlackCall) -> None:
        """Apply the content rules Slack documents per method (blocks, text, views, files)."""
        params = call.params
        if call.method in {"chat.postMessage", "chat.postEphemeral", "chat.update", "chat.scheduleMessage"}:
            if "blocks" in params:
                errors = validate_blocks(params["blocks"])
                if errors:
                    raise Rejection("invalid_blocks", "; ".join(errors))
            if call.method != "chat.update" and not any(
                params.get(k) for k in ("text", "blocks", "attachments")
            ):
                raise Rejection("no_text", "[ERROR] one of text, blocks or attachments is required")
            if len(str(params.get("text") or "")) > MAX_MESSAGE_TEXT:
                raise Rejection("msg_too_long", f"[ERROR] text exceeds {MAX_MESSAGE_TEXT} characters")
        elif call.method in {"views.open", "views.update", "views.push", "views.publish"}:
            if call.method == "views.update" and not (params.get("view_id") or params.get("external_id")):
                raise Rejection("invalid_arguments", "[ERROR] views.update needs view_id or external_id")
            if "view" in params:
                self._check_view(params["view"])
        elif call.method == "files.completeUploadExternal":
            check_complete_upload(params.get("files"))
            if "blocks" in params:
                errors = validate_blocks(params["blocks"])
                if errors:
                    raise Rejection("invalid_blocks", "; ".join(errors))

    def _check_view(self, view: Any) -> None:
        """Reject a view payload that Slack's View model or Block Kit limits refuse.

        Slack answers an invalid view (its blocks included) with `invalid_arguments` and the
        reasons in response_metadata.messages (docs.slack.dev/reference/methods/views.open, the
        example error response); views.* document no `invalid_blocks`.
        """
        if not isinstance(view, dict):
            raise Rejection("invalid_arguments", "[ERROR] view must be a JSON object")
        errors = validate_blocks(view.get("blocks", []), limit=View.blocks_max_length)
        if errors:
            raise Rejection("invalid_arguments", "[ERROR] invalid view blocks: " + "; ".join(errors))
        try:
            View(**view).validate_json()
        except Exception as exc:  # any model error means Slack would reject it
            raise Rejection("invalid_arguments", f"[ERROR] invalid view: {exc}") from exc

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

    def _rate_limited(self, call: SlackCall) -> int | None:
        """Count the call against Slack's limits; return a Retry-After when it is over them."""
        if self._limiter is None:
            return None
        with self._lock:
            channel = None
            if call.method == "chat.postMessage":
                raw = str(call.params.get("channel") or "")
                channel = self._lookup_channel(raw) or raw
            return self._limiter.retry_after(call.method, channel)

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
        """Take a message posted to a response_url, within Slack's limits, checking its blocks.

        A response_url takes five posts within thirty minutes (limits.py). Slack documents the
        limit but not its answer past it; the fake answers HTTP 404 with `used_url` (a sixth
        post) or `expired_url` (after thirty minutes) as the body, in plain text, like the other
        errors of Slack's hooks host, and records a violation. UNDOCUMENTED answer.
        """
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
            refusal = self._response_urls.refusal(response_id)
            if refusal is not None:
                answer, reason = refusal
                self.violations.append(Violation("response_url", answer, reason))
                return web.Response(status=404, text=answer, content_type="text/plain")
            self.response_posts.append(ResponseUrlPost(response_id, body, dict(request.headers)))
            if errors:
                self.violations.append(Violation("response_url", "invalid_blocks", "; ".join(errors)))
            else:
                self._response_urls.spend(response_id)
            self._changed.notify_all()
        if errors:
            return web.Response(status=400, text="invalid_blocks", content_type="text/plain")
        return web.json_response({"ok": True})
