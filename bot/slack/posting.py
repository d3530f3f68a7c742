"""Stay within Slack's limits: pace posts, split messages, spend a response_url within bounds, upload."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
from slack_sdk.errors import SlackApiError

from bot.render.common import SECTION_LIMIT, Block, Message, Upload, split_text
from bot.slack.errors import slack_error_code

if TYPE_CHECKING:  # the async client brings aiohttp: loaded by whoever builds one
    from slack_sdk.web.async_client import AsyncWebClient

MAX_BLOCKS = 50
# A file on disk goes to Slack's upload URL a chunk at a time, each write within the timeout.
UPLOAD_CHUNK_BYTES = 1 << 20
UPLOAD_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Slack allows about one message per second per channel, with short bursts.
POST_INTERVAL_SECONDS = 1.0
POST_BURST = 3


class ChannelPacer:
    """Keep posts to one channel to about one a second, allowing a short burst (per process).

    `clock` and `sleep` are time.monotonic and asyncio.sleep; tests pass a clock of their own.
    """

    def __init__(
        self,
        interval: float = POST_INTERVAL_SECONDS,
        burst: int = POST_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Token bucket per channel: (tokens left, when last counted).
        self._buckets: dict[str, tuple[float, float]] = {}

    async def wait_turn(self, channel: str) -> None:
        """Return when a post to `channel` may go out."""
        async with self._locks[channel]:
            now = self._clock()
            tokens, since = self._buckets.get(channel, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - since) / self.interval)
            if tokens < 1:
                await self._sleep((1 - tokens) * self.interval)
                tokens, now = 1.0, self._clock()
            self._buckets[channel] = (tokens - 1, now)


def _split_block(block: Block) -> list[Block]:
    text: Any = block.get("text")
    if (
        block.get("type") != "section"
        or not isinstance(text, dict)
        or len(text.get("text", "")) <= SECTION_LIMIT
    ):
        return [block]
    inside_code = text["text"].startswith("```") and text["text"].endswith("```")
    body = text["text"][3:-3] if inside_code else text["text"]
    limit = SECTION_LIMIT - 6 if inside_code else SECTION_LIMIT
    parts = split_text(body, limit)
    # A code block cut in two must be closed and reopened, or the rest renders as prose.
    return [
        {
            **{k: v for k, v in block.items() if k not in ("text", "block_id")},
            "text": {**text, "text": f"```{part}```" if inside_code else part},
        }
        for part in parts
    ]


def split_message(message: Message) -> list[Message]:
    """Split a message into messages within Block Kit's limits, instead of having it rejected."""
    blocks = [piece for block in message.blocks for piece in _split_block(block)]
    if len(blocks) <= MAX_BLOCKS:
        return [Message(text=message.text, blocks=blocks)]
    chunks = [blocks[start : start + MAX_BLOCKS] for start in range(0, len(blocks), MAX_BLOCKS)]
    return [
        Message(
            text=message.text if index == 0 else f"{message.text} ({index + 1}/{len(chunks)})", blocks=chunk
        )
        for index, chunk in enumerate(chunks)
    ]


Responder = Callable[..., Awaitable[Any]]


class ResponseUrlSpent(Exception):
    """The command's response_url was used five times or is over thirty minutes old."""


class ResponseUrl:
    """A command's response_url, used within Slack's limits: five uses, thirty minutes.

    Past them Slack drops the message silently; callers catch ResponseUrlSpent and post through
    the Web API instead.
    """

    MAX_USES = 5
    LIFETIME_SECONDS = 30 * 60.0

    def __init__(self, respond: Responder, clock: Callable[[], float] = time.monotonic) -> None:
        self._respond = respond
        self._clock = clock
        self._born = clock()
        self.uses = 0

    def usable(self) -> bool:
        """Return whether Slack still accepts messages on this response_url."""
        return self.uses < self.MAX_USES and self._clock() - self._born < self.LIFETIME_SECONDS

    async def __call__(self, **message: Any) -> Any:
        """Send a message through the response_url, or raise ResponseUrlSpent."""
        if not self.usable():
            raise ResponseUrlSpent(
                f"response_url used {self.uses} times, {self._clock() - self._born:.0f} s old"
            )
        self.uses += 1
        return await self._respond(**message)


class UploadFailed(Exception):
    """Slack did not take a file; the message names the step that failed."""


async def upload_from_disk(
    client: AsyncWebClient, channel: str, thread_ts: str | None, upload: Upload
) -> None:
    """Post a file from disk into a thread by Slack's external upload flow, never whole in memory."""
    path = upload.path
    if path is None:
        raise ValueError(f"{upload.filename} has no file on disk")
    size = path.stat().st_size
    try:
        reserved = await client.files_getUploadURLExternal(
            filename=upload.filename, length=size, alt_txt=upload.alt_text or None
        )
    except SlackApiError as error:
        raise UploadFailed(f"files.getUploadURLExternal: {slack_error_code(error)}") from None

    async def chunks() -> AsyncIterator[bytes]:
        with path.open("rb") as source:
            while chunk := await asyncio.to_thread(source.read, UPLOAD_CHUNK_BYTES):
                yield chunk

    try:
        async with httpx.AsyncClient(timeout=UPLOAD_TIMEOUT) as http:
            # A declared length, not chunked encoding: Slack checks it against getUploadURLExternal's.
            response = await http.post(
                str(reserved["upload_url"]),
                content=chunks(),
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            )
    except httpx.HTTPError as error:
        raise UploadFailed(f"sending {size:,} bytes: {type(error).__name__}") from None
    if response.status_code != 200:
        raise UploadFailed(f"the upload URL answered HTTP {response.status_code}")
    try:
        await client.files_completeUploadExternal(
            files=[{"id": str(reserved["file_id"]), "title": upload.title}],
            channel_id=channel,
            thread_ts=thread_ts,
        )
    except SlackApiError as error:
        raise UploadFailed(f"files.completeUploadExternal: {slack_error_code(error)}") from None
