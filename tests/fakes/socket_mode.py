"""A local Socket Mode server, as Slack runs it: hello, envelopes, acks, redelivery, disconnects.

No Socket Mode server is published to run locally, so this one follows the protocol as Slack
documents it (api.slack.com/apis/connections/socket-implement) and as slack_sdk's client expects
it (`slack_sdk/socket_mode/`):

- the app calls `apps.connections.open` with its app-level token (answered by the FakeSlack this
  server is attached to) and gets a `ws://` URL with a ticket; a URL this server did not hand out
  is refused;
- the server says `{"type": "hello", "num_connections": N, "debug_info", "connection_info"}` first;
- each delivery is an envelope `{"envelope_id", "type", "accepts_response_payload", "payload"}`;
  Events API envelopes also carry `retry_attempt` (0 the first time) and `retry_reason` ("" the
  first time), and only they do (slack_sdk's SocketModeRequest notes the same); the app answers
  `{"envelope_id": ..., "payload"?: ...}`; the payload of a slash command's or a view
  submission's ack is its answer (a message, `response_action`);
- an envelope not acknowledged within `ack_timeout` is delivered again, to another connection
  when there is one: an Events API envelope with `retry_attempt` + 1 and `retry_reason:
  "timeout"`. Slack documents these retries for the Events API only; whether it ever delivers a
  slash command or an interaction twice it does not say, so by default (`redeliver_all=True`)
  the fake does, the same envelope again with no retry fields: the worst case a bot must stand;
- while no connection is open, an envelope waits for one (without using up its attempts);
- `{"type": "disconnect", "reason": ...}` asks the app to reconnect (a new `apps.connections.open`,
  then a new socket); Slack sends it with `warning` a few seconds before `refresh_requested`;
  a dropped connection (`disconnect(abruptly=True)`) is a TCP connection cut without a close frame.
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

# Interactions whose ack may carry an answer (`response_action`, options); a button click's may not.
_ANSWERED_INTERACTIONS = frozenset({"view_submission", "block_suggestion"})
# How long an envelope waits for some connection to be open before it is given up.
_CONNECTION_WAIT_SECONDS = 60.0


def answerable(kind: str, payload: dict[str, Any]) -> bool:
    """Return what Slack says in `accepts_response_payload` for this kind of envelope."""
    if kind == "slash_commands":
        return True
    if kind == "interactive":
        return payload.get("type") in _ANSWERED_INTERACTIONS
    return False


@dataclass
class Delivery:
    """One delivery of an envelope: to which connection, and as which attempt."""

    connection: int
    retry_attempt: int


@dataclass
class Envelope:
    """One envelope and what became of it."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    first_attempt: int = 0  # > 0 for a retry sent with resend()
    lose_acks: int = 0  # this many acks never reach Slack (lost on the way)
    ack_timeout: float | None = None  # this envelope's, instead of the server's
    deliveries: list[Delivery] = field(default_factory=list)
    acks: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (connection, ack message)
    lost_acks: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    finished: bool = False  # Slack stopped delivering it (acknowledged, or out of attempts)

    @property
    def acknowledged(self) -> bool:
        """Return whether Slack got an acknowledgement from any connection."""
        return bool(self.acks)

    @property
    def connections(self) -> list[int]:
        """Return the connections it was delivered to, in order."""
        return [delivery.connection for delivery in self.deliveries]


class FakeSocketMode:
    """Serve Socket Mode on 127.0.0.1 in a thread of its own; attach it to a FakeSlack."""

    def __init__(
        self,
        slack: FakeSlack,
        *,
        ack_timeout: float = 3.0,
        max_retries: int = 3,
        redeliver_all: bool = True,
    ) -> None:
        self.slack = slack
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.redeliver_all = redeliver_all
        self.envelopes: dict[str, Envelope] = {}
        self.connections_opened = 0
        self.refused_connections = 0
        self._tickets: set[str] = set()
        self._sockets: dict[int, web.WebSocketResponse] = {}
        self._transports: dict[int, asyncio.Transport] = {}
        self._numbers = itertools.count(1)
        self._turn = itertools.count()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeSocketMode:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="fake-socket-mode", daemon=True
        )
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
        """Return a new websocket URL, as apps.connections.open hands out (a ticket of its own)."""
        ticket = uuid.uuid4().hex
        with self._lock:
            self._tickets.add(ticket)
        return f"ws://127.0.0.1:{self._port}/link/?ticket={ticket}&app_id={self.slack.app_id}"

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_get("/link/", self._handle_socket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self._port = int(self._runner.addresses[0][1])
        ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for socket in list(self._sockets.values()):
            with contextlib.suppress(Exception):
                await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ the protocol

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            known = request.query.get("ticket", "") in self._tickets
        if not known:
            with self._changed:
                self.refused_connections += 1
                self._changed.notify_all()
            raise web.HTTPUnauthorized(text="unknown ticket: call apps.connections.open")
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        number = next(self._numbers)
        with self._changed:
            self._sockets[number] = socket
            if request.transport is not None:
                self._transports[number] = request.transport
            self.connections_opened += 1
            count = len(self._sockets)
            self._changed.notify_all()
        await socket.send_json(
            {
                "type": "hello",
                "num_connections": count,
                "debug_info": {
                    "host": "fake-socket-mode",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.slack.app_id},
            }
        )
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    with contextlib.suppress(ValueError):
                        self._take_ack(number, json.loads(message.data))
        finally:
            with self._changed:
                self._sockets.pop(number, None)
                self._transports.pop(number, None)
                self._changed.notify_all()
        return socket

    def _take_ack(self, number: int, message: dict[str, Any]) -> None:
        with self._changed:
            envelope = self.envelopes.get(str(message.get("envelope_id")))
            if envelope is None:
                return  # Slack ignores an ack of an envelope it never sent
            if len(envelope.lost_acks) < envelope.lose_acks:
                envelope.lost_acks.append((number, message))
            else:
                envelope.acks.append((number, message))
            self._changed.notify_all()

    async def _deliver(self, envelope: Envelope) -> None:
        timeout = self.ack_timeout if envelope.ack_timeout is None else envelope.ack_timeout
        retried = self.redeliver_all or envelope.type == "events_api"
        attempts = self.max_retries + 1 if retried else 1
        for attempt in range(envelope.first_attempt, envelope.first_attempt + attempts):
            if envelope.acknowledged:
                break
            last = envelope.deliveries[-1].connection if envelope.deliveries else None
            number, socket = await self._wait_for_socket(exclude=last)
            if socket is None:
                break
            message: dict[str, Any] = {
                "envelope_id": envelope.envelope_id,
                "type": envelope.type,
                "accepts_response_payload": envelope.accepts_response_payload,
                "payload": envelope.payload,
            }
            if envelope.type == "events_api":
                message["retry_attempt"] = attempt
                message["retry_reason"] = "timeout" if attempt else ""
            with self._changed:
                envelope.deliveries.append(Delivery(number, attempt))
                self._changed.notify_all()
            # A connection closing as it is sent to: the envelope is simply not acknowledged.
            with contextlib.suppress(ConnectionError, RuntimeError):
                await socket.send_json(message)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not envelope.acknowledged:
                await asyncio.sleep(0.02)
        with self._changed:
            envelope.finished = True
            self._changed.notify_all()

    async def _wait_for_socket(self, exclude: int | None) -> tuple[int, web.WebSocketResponse | None]:
        """Pick an open connection, another than `exclude` when there is one; wait while there is none."""
        deadline = time.monotonic() + _CONNECTION_WAIT_SECONDS
        while time.monotonic() < deadline:
            with self._lock:
                numbers = [number for number, socket in sorted(self._sockets.items()) if not socket.closed]
                if numbers:
                    others = [number for number in numbers if number != exclude] or numbers
                    number = others[next(self._turn) % len(others)]
                    return number, self._sockets[number]
            await asyncio.sleep(0.02)
        return 0, None

    # ------------------------------------------------------------------ what tests call

    @property
    def open_connections(self) -> int:
        """Return how many connections are open now."""
        with self._lock:
            return len(self._sockets)

    def send(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool | None = None,
        lose_acks: int = 0,
        ack_timeout: float | None = None,
    ) -> Envelope:
        """Deliver an envelope (`slash_commands`, `interactive`, `events_api`) and return its record.

        `lose_acks`: that many of its acks are lost on the way (Slack never sees them), so it is
        delivered again; `ack_timeout`: how long Slack waits for its ack before delivering it
        again (0: at once, so deliveries overlap).
        """
        accepts = answerable(kind, payload) if accepts_response_payload is None else accepts_response_payload
        envelope = Envelope(
            uuid.uuid4().hex, kind, payload, accepts, lose_acks=lose_acks, ack_timeout=ack_timeout
        )
        return self._start(envelope)

    def resend(self, envelope: Envelope) -> Envelope:
        """Deliver an envelope's payload again, as Slack's next retry of it: a new envelope id,
        the next `retry_attempt` (Events API); the app knows it by the payload's own ids."""
        retry = Envelope(
            uuid.uuid4().hex,
            envelope.type,
            envelope.payload,
            envelope.accepts_response_payload,
            first_attempt=max((d.retry_attempt for d in envelope.deliveries), default=0) + 1,
        )
        return self._start(retry)

    def _start(self, envelope: Envelope) -> Envelope:
        with self._lock:
            self.envelopes[envelope.envelope_id] = envelope
        loop = self._loop
        assert loop is not None

        def start() -> None:
            task = loop.create_task(self._deliver(envelope))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.call_soon_threadsafe(start)
        return envelope

    def wait_for_connections(self, count: int, timeout: float = 15.0) -> None:
        """Wait until `count` connections are open."""
        self._wait(lambda: len(self._sockets) >= count, timeout, f"{count} open Socket Mode connection(s)")

    def wait_for_connections_opened(self, count: int, timeout: float = 15.0) -> None:
        """Wait until `count` connections were opened in all (reconnections count)."""
        self._wait(lambda: self.connections_opened >= count, timeout, f"{count} Socket Mode connection(s)")

    def wait_for_ack(self, envelope: Envelope, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the first acknowledgement Slack got of an envelope and return it."""
        self._wait(lambda: envelope.acknowledged, timeout, f"an ack of envelope {envelope.type}")
        return envelope.acks[0][1]

    def wait_for_acks(self, envelope: Envelope, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` acknowledgements of an envelope arrived (lost ones included)."""
        self._wait(
            lambda: len(envelope.acks) + len(envelope.lost_acks) >= count,
            timeout,
            f"{count} acks of envelope {envelope.type}",
        )

    def wait_until_done(self, envelope: Envelope, timeout: float = 20.0) -> None:
        """Wait until Slack stopped delivering an envelope and every delivery of it was acknowledged."""

        def done() -> bool:
            answered = len(envelope.acks) + len(envelope.lost_acks) >= len(envelope.deliveries)
            return envelope.finished and answered

        self._wait(done, timeout, f"an ack of every delivery of envelope {envelope.type}")

    async def wait_for_ack_async(self, envelope: Envelope, timeout: float = 10.0) -> dict[str, Any]:
        """wait_for_ack, without blocking the event loop (the bot may be running on it)."""
        return await asyncio.to_thread(self.wait_for_ack, envelope, timeout)

    async def wait_for_acks_async(self, envelope: Envelope, count: int, timeout: float = 10.0) -> None:
        """wait_for_acks, without blocking the event loop."""
        await asyncio.to_thread(self.wait_for_acks, envelope, count, timeout)

    async def wait_until_done_async(self, envelope: Envelope, timeout: float = 20.0) -> None:
        """wait_until_done, without blocking the event loop."""
        await asyncio.to_thread(self.wait_until_done, envelope, timeout)

    async def wait_for_connections_async(self, count: int, timeout: float = 15.0) -> None:
        """wait_for_connections, without blocking the event loop."""
        await asyncio.to_thread(self.wait_for_connections, count, timeout)

    async def wait_for_connections_opened_async(self, count: int, timeout: float = 15.0) -> None:
        """wait_for_connections_opened, without blocking the event loop."""
        await asyncio.to_thread(self.wait_for_connections_opened, count, timeout)

    def _wait(self, condition: Any, timeout: float, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, timeout):
                raise AssertionError(f"no {what} within {timeout} s")

    def disconnect(self, reason: str = "refresh_requested", *, abruptly: bool = False) -> None:
        """Ask every connection to reconnect (Slack's `disconnect`), or cut them without a word."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._disconnect(reason, abruptly), self._loop).result(10)

    async def _disconnect(self, reason: str, abruptly: bool) -> None:
        with self._lock:
            sockets = list(self._sockets.items())
            transports = dict(self._transports)
        for number, socket in sockets:
            with contextlib.suppress(Exception):
                if abruptly:
                    # No close frame: the TCP connection is cut, as when a network path dies.
                    transport = transports.get(number)
                    if transport is not None:
                        transport.abort()
                else:
                    await socket.send_json(
                        {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-socket-mode"}}
                    )
