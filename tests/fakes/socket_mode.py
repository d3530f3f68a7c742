"""A local Socket Mode server, as Slack runs it: hello, envelopes, acks, redelivery, disconnects.

No Socket Mode server is published to run locally, so this one follows the protocol as Slack
documents it and as slack_sdk's client expects it (`slack_sdk/socket_mode/`):

- the app calls `apps.connections.open` with its app-level token (answered by the FakeSlack this
  server is attached to) and gets this server's `ws://` URL;
- the server says `{"type": "hello", "num_connections": N, ...}` first;
- each delivery is an envelope `{"envelope_id", "type", "accepts_response_payload", "payload",
  "retry_attempt", "retry_reason"}`; the app answers `{"envelope_id": ..., "payload"?: ...}`;
- an envelope not acknowledged within `ack_timeout` is delivered again, with `retry_attempt` + 1
  and `retry_reason: "timeout"`, to another connection when there is one;
- `{"type": "disconnect", "reason": ...}` asks the app to reconnect (a new `apps.connections.open`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from tests.fakes import FakeSlack


@dataclass
class Envelope:
    """One envelope and what became of it."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    deliveries: list[int] = field(default_factory=list)  # connection numbers, in order
    acks: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (connection, ack message)

    @property
    def acknowledged(self) -> bool:
        """Return whether any connection acknowledged it."""
        return bool(self.acks)


class FakeSocketMode:
    """Serve Socket Mode on 127.0.0.1 in a thread of its own; attach it to a FakeSlack."""

    def __init__(self, slack: FakeSlack, *, ack_timeout: float = 3.0, max_retries: int = 3) -> None:
        self.slack = slack
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.envelopes: dict[str, Envelope] = {}
        self.connections_opened = 0
        self._sockets: dict[int, web.WebSocketResponse] = {}
        self._numbers = itertools.count(1)
        self._turn = itertools.count()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeSocketMode:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        assert self._port is not None, "the Socket Mode server did not start"
        self.slack.respond_with("apps.connections.open", lambda call: {"ok": True, "url": self.ws_url})
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def ws_url(self) -> str:
        """Return the websocket URL apps.connections.open hands out."""
        return f"ws://127.0.0.1:{self._port}/link/?ticket={uuid.uuid4().hex}"

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_get("/link/", self._handle_socket)
        self._runner = web.AppRunner(app)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        for socket in list(self._sockets.values()):
            with contextlib.suppress(Exception):
                await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ the protocol

    async def _handle_socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        number = next(self._numbers)
        with self._changed:
            self._sockets[number] = socket
            self.connections_opened += 1
            count = len(self._sockets)
            self._changed.notify_all()
        await socket.send_json(
            {
                "type": "hello",
                "num_connections": count,
                "debug_info": {"host": "fake-socket-mode", "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.slack.app_id},
            }
        )
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    self._take_ack(number, json.loads(message.data))
        finally:
            with self._changed:
                self._sockets.pop(number, None)
                self._changed.notify_all()
        return socket

    def _take_ack(self, number: int, message: dict[str, Any]) -> None:
        with self._changed:
            envelope = self.envelopes.get(str(message.get("envelope_id")))
            if envelope is not None:
                envelope.acks.append((number, message))
            self._changed.notify_all()

    async def _deliver(self, envelope: Envelope) -> None:
        for attempt in range(self.max_retries + 1):
            number = self._pick(exclude=envelope.deliveries[-1] if envelope.deliveries else None)
            if number is None:
                await asyncio.sleep(0.05)
                continue
            socket = self._sockets.get(number)
            if socket is None or socket.closed:
                continue
            message = {
                "envelope_id": envelope.envelope_id,
                "type": envelope.type,
                "accepts_response_payload": envelope.accepts_response_payload,
                "payload": envelope.payload,
                "retry_attempt": attempt,
                "retry_reason": "timeout" if attempt else "",
            }
            with self._lock:
                envelope.deliveries.append(number)
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await socket.send_json(message)
            deadline = time.monotonic() + self.ack_timeout
            while time.monotonic() < deadline:
                if envelope.acknowledged:
                    return
                await asyncio.sleep(0.02)

    def _pick(self, exclude: int | None) -> int | None:
        with self._lock:
            numbers = sorted(self._sockets)
        if not numbers:
            return None
        others = [number for number in numbers if number != exclude] or numbers
        return others[next(self._turn) % len(others)]

    # ------------------------------------------------------------------ what tests call

    def wait_for_connections(self, count: int, timeout: float = 15.0) -> None:
        """Wait until `count` connections are open."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._sockets) >= count, timeout):
                raise AssertionError(f"{len(self._sockets)} Socket Mode connection(s), wanted {count}")

    @property
    def open_connections(self) -> int:
        """Return how many connections are open now."""
        with self._lock:
            return len(self._sockets)

    def send(
        self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool = True
    ) -> Envelope:
        """Deliver an envelope (`slash_commands`, `interactive`, `events_api`) and return its record."""
        envelope = Envelope(uuid.uuid4().hex, kind, payload, accepts_response_payload)
        with self._lock:
            self.envelopes[envelope.envelope_id] = envelope
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._deliver(envelope), self._loop)
        return envelope

    def wait_for_ack(self, envelope: Envelope, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the first acknowledgement of an envelope and return it."""
        with self._changed:
            if not self._changed.wait_for(lambda: envelope.acknowledged, timeout):
                raise AssertionError(f"envelope {envelope.type} was not acknowledged in {timeout} s")
            return envelope.acks[0][1]

    def disconnect(self, reason: str = "refresh_requested", *, abruptly: bool = False) -> None:
        """Ask every connection to reconnect (Slack's `disconnect`), or drop them without a word."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._disconnect(reason, abruptly), self._loop).result(10)

    async def _disconnect(self, reason: str, abruptly: bool) -> None:
        for socket in list(self._sockets.values()):
            with contextlib.suppress(Exception):
                if abruptly:
                    await socket.close(code=1006)
                else:
                    await socket.send_json({"type": "disconnect", "reason": reason, "debug_info": {}})
