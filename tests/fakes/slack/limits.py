"""Slack's rate limits and response_url limits, as the fake enforces them, on a clock a test can move.

Rate limits (docs.slack.dev/apis/web-api/rate-limits; api.slack.com/docs/rate-limits): limits
apply "per API method per app per workspace"; each method has a tier:

    Tier 1   1+ per minute    "A small amount of burst behavior is tolerated."
    Tier 2  20+ per minute    "occasional bursts of more requests"
    Tier 3  50+ per minute    "Sporadic bursts are welcome."
    Tier 4 100+ per minute    "generous burst behavior"
    Special                   chat.postMessage: "generally allows posting one message per second
                              per channel, while also maintaining a workspace-wide limit";
                              "Posting messages: 1 per second. Short bursts >1 allowed."

Past a limit Slack answers HTTP 429 with a `Retry-After` header (seconds) and
`{"ok": false, "error": "ratelimited"}`. The fake models each limit as a token bucket: a tier
refills at its per-minute figure and holds a minute's worth (the documented bursts; Tier 1 holds
TIER1_BURST); chat.postMessage has a bucket per channel refilling at one a second and holding
POST_MESSAGE_BURST. The figures are Slack's floors ("20+"), so a bot that stays within them stays
within Slack's. chat.postMessage's workspace-wide limit ("several hundred messages per minute")
has no published figure and is not modelled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

TIER_PER_MINUTE = {1: 1.0, 2: 20.0, 3: 50.0, 4: 100.0}
# "A small amount of burst behavior is tolerated" (Tier 1) has no figure; the fake allows this.
TIER1_BURST = 3.0
# "Short bursts >1 allowed" has no figure either; the bot's own pacer (bot/slack/posting.py,
# ChannelPacer) keeps to a burst of 3, so the fake tolerates a little more than the bot uses.
POST_MESSAGE_PER_SECOND = 1.0
POST_MESSAGE_BURST = 4.0

# The tier of each method the bot calls or the fake implements, from each method's page on
# docs.slack.dev/reference/methods/<method> ("Rate limits" fact; e.g. chat.update: Tier 3 at
# api.slack.com/methods/chat.update). Cross-checked against two libraries that copy the figures
# from those pages: slack_kit's priv/docs/methods/<method>.json ("rate_limit": "Tier 4: 100+ per
# minute" for views.push) and slack-morphism-rust's src/api/*.rs (SLACK_TIER<n>_METHOD_CONFIG).
# auth.test is "Special" with no published figure and is not limited here; nor is a method
# missing from this table.
METHOD_TIERS: dict[str, int] = {
    "apps.connections.open": 1,
    # bookmarks.*: "Rate limits: Tier 2" (api.slack.com/methods/bookmarks.edit; slack_kit's
    # Slack.Web.Bookmarks docs: "Rate limit: Tier 2: 20+ per minute" for bookmarks.add).
    "bookmarks.add": 2,
    "bookmarks.edit": 2,
    "chat.delete": 3,
    "chat.postEphemeral": 4,
    "chat.update": 3,
    "conversations.archive": 2,
    "conversations.create": 2,
    "conversations.info": 3,
    "conversations.invite": 3,
    "conversations.join": 3,
    "conversations.members": 4,
    "conversations.open": 3,
    "conversations.replies": 3,
    "files.completeUploadExternal": 4,
    "files.getUploadURLExternal": 4,
    "pins.add": 2,
    "team.info": 3,
    "usergroups.users.list": 2,
    "users.info": 4,
    "users.list": 2,
    "views.open": 4,
    "views.publish": 4,
    "views.push": 4,
    "views.update": 4,
}
POST_MESSAGE = "chat.postMessage"

# A response_url "can be used up to 5 times within 30 minutes" of the interaction
# (api.slack.com/interactivity/handling#message_responses; the same for slash commands,
# api.slack.com/interactivity/slash-commands#responding_response_url).
RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_LIFETIME_SECONDS = 30 * 60.0


class ManualClock:
    """A monotonic clock that moves only when a test says so: `FakeSlack(clock=ManualClock())`."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        """Return the current reading."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


@dataclass
class TokenBucket:
    """`capacity` requests at once, refilled at `rate` a second."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Spend a token and return 0, or return how many seconds until one is there."""
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Slack's per-method (and, for chat.postMessage, per-channel) limits; `scale` multiplies them."""

    def __init__(self, clock: Clock, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("rate_scale must be positive")
        self.clock = clock
        self.scale = scale
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def retry_after(self, method: str, channel: str | None) -> int | None:
        """Count a call; return None if it is within the limits, else the Retry-After (seconds)."""
        if method == POST_MESSAGE:
            key = (method, channel or "")
            rate, capacity = POST_MESSAGE_PER_SECOND, POST_MESSAGE_BURST
        elif method in METHOD_TIERS:
            tier = METHOD_TIERS[method]
            key = (method, "")
            rate = TIER_PER_MINUTE[tier] / 60.0
            capacity = TIER1_BURST if tier == 1 else TIER_PER_MINUTE[tier]
        else:
            return None
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            capacity *= self.scale
            bucket = self._buckets[key] = TokenBucket(rate * self.scale, capacity, capacity, now)
        wait = bucket.take(now)
        # Slack's Retry-After is a whole number of seconds, at least 1.
        return None if wait == 0 else max(1, math.ceil(wait))


@dataclass
class ResponseUrlUse:
    """How much of one response_url has been spent."""

    issued: float
    uses: int = 0


class ResponseUrlBook:
    """Slack's limits on a response_url: five uses, thirty minutes from when it was issued."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._urls: dict[str, ResponseUrlUse] = {}

    def issue(self, response_id: str) -> None:
        """Start the thirty minutes of a response_url handed to a test (first issue wins)."""
        self._urls.setdefault(response_id, ResponseUrlUse(self.clock()))

    def refusal(self, response_id: str) -> tuple[str, str] | None:
        """Return (answer, reason) if Slack would refuse another post to this URL, else None."""
        use = self._urls.setdefault(response_id, ResponseUrlUse(self.clock()))
        age = self.clock() - use.issued
        if age > RESPONSE_URL_LIFETIME_SECONDS:
            return "expired_url", f"response_url {response_id} is {age:.0f} s old (limit 30 minutes)"
        if use.uses >= RESPONSE_URL_MAX_USES:
            return "used_url", f"response_url {response_id} already used {use.uses} times (limit 5)"
        return None

    def spend(self, response_id: str) -> None:
        """Count a post Slack took."""
        self._urls.setdefault(response_id, ResponseUrlUse(self.clock())).uses += 1


def default_clock() -> float:
    """The fake's clock unless a test gives another: time.monotonic."""
    return time.monotonic()
