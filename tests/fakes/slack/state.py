"""The workspace the fake Slack holds: channels (and the bot's membership), users, groups, messages.

Channels. A channel a test declares with add_channel() has a membership and an archived flag,
and the methods that act in a channel answer as Slack does for them (ACCESS below). A channel id
no test declared, but shaped like one (C…, G…, D…), is created on first use as a public channel
the bot is in: "the workspace has it and the bot was invited". That default is kept because most
tests post to a channel id of their choosing and are about something else; a test about
membership declares its channels (or passes `strict_channels=True`, which answers
channel_not_found for every undeclared id, as Slack does for a typo). Anything else (a name that
no channel has, an id of another kind) is channel_not_found.

Membership, from Slack's method pages (docs.slack.dev/reference/methods/<method>):
- chat.postMessage: an app not in a public channel posts there only with the `chat:write.public`
  scope ("Send messages to channels your Slack app isn't a member of",
  docs.slack.dev/reference/scopes/chat:write.public; otherwise `not_in_channel`); a private
  channel or DM it is not in is invisible to it: `channel_not_found`. Archived: `is_archived`.
- chat.postEphemeral: needs membership (`not_in_channel`; private: `channel_not_found`).
- chat.update: the app's own message; in an archived channel `is_inactive` ("cannot be edited
  within a frozen, archived or deleted channel").
- files.completeUploadExternal: real membership, even with chat:write.public (`not_in_channel`,
  see documented.py); a channel it cannot see is `invalid_channel`.
- pins.add: membership (`not_in_channel`, assumed: see documented.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.fakes.slack.limits import ResponseUrlBook
from tests.fakes.slack.models import Rejection
from tests.fakes.specs import REPO_ROOT

CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]+")
USER_ID = re.compile(r"[UW][A-Z0-9]+")
PUBLIC_WRITE_SCOPE = "chat:write.public"


@dataclass(frozen=True)
class Access:
    """What a method answers in a channel the bot is not in, or one that is archived (None: allowed)."""

    archived: str | None
    public_not_member: str | None
    private_not_member: str | None
    # The scope that lets the app act in a public channel it is not in.
    public_scope: str | None = None


ACCESS: dict[str, Access] = {
    "chat.postMessage": Access("is_archived", "not_in_channel", "channel_not_found", PUBLIC_WRITE_SCOPE),
    "chat.postEphemeral": Access("is_archived", "not_in_channel", "channel_not_found"),
    "chat.update": Access("is_inactive", None, "channel_not_found"),
    "chat.delete": Access(None, None, "channel_not_found"),
    "pins.add": Access(None, "not_in_channel", "channel_not_found"),
    "conversations.info": Access(None, None, "channel_not_found"),
    "conversations.replies": Access(None, None, "channel_not_found"),
    # A public channel's members are listed to any app with channels:read; a private one's only
    # to an app in it (docs.slack.dev/reference/methods/conversations.members).
    "conversations.members": Access(None, None, "channel_not_found"),
    "files.completeUploadExternal": Access("invalid_channel", "not_in_channel", "invalid_channel"),
    # A private channel the app is not in is invisible to it (bookmarks.add and .edit list
    # channel_not_found); a public one it is not in is not modelled (no documented answer).
    "bookmarks.add": Access(None, None, "channel_not_found"),
    "bookmarks.edit": Access(None, None, "channel_not_found"),
    "chat.getPermalink": Access(None, None, "channel_not_found"),
}


@cache
def manifest_bot_scopes(path: Path = REPO_ROOT / "app.yaml") -> frozenset[str]:
    """Return the bot scopes the app manifest (app.yaml) asks for."""
    with path.open(encoding="utf-8") as handle:
        manifest = yaml.safe_load(handle)
    return frozenset(manifest["oauth_config"]["scopes"]["bot"])


class WorkspaceState:
    """Channels, users, user groups, messages and the bot's membership, for FakeSlack."""

    # Set by FakeSlack.__init__.
    team_id: str
    bot_user_id: str
    bot_id: str
    scopes: frozenset[str]
    strict_channels: bool
    clock: Callable[[], float]
    channels: dict[str, dict[str, Any]]
    users: dict[str, dict[str, Any]]
    usergroups: dict[str, list[str]]
    # The people in each declared channel (set_channel_members, conversations.invite); the bot
    # is in it when the channel's is_member says so.
    channel_members: dict[str, list[str]]
    _messages: dict[str, list[dict[str, Any]]]
    _lock: threading.RLock
    _ids: Any
    _last_ts_us: int
    _response_urls: ResponseUrlBook

    @property
    def root_url(self) -> str:
        """Return `http://127.0.0.1:PORT` of the running fake (FakeSlack serves it)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ set-up by tests

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        is_private: bool = False,
        is_member: bool = True,
        is_archived: bool = False,
        topic: str = "",
        purpose: str = "",
    ) -> dict[str, Any]:
        """Create (or replace) a channel; `is_member=False` is one the bot was never invited to."""
        is_im = channel_id.startswith("D")
        channel = {
            "id": channel_id,
            "name": name,
            "name_normalized": name,
            "is_channel": not is_private and channel_id.startswith("C"),
            "is_group": is_private and not is_im,
            "is_im": is_im,
            "is_mpim": False,
            "is_private": is_private or is_im,
            "is_archived": is_archived,
            "is_general": False,
            "is_shared": False,
            "is_ext_shared": False,
            "is_org_shared": False,
            "is_member": is_member,
            "created": int(time.time()),
            "creator": self.bot_user_id,
            "context_team_id": self.team_id,
            "topic": {"value": topic, "creator": "", "last_set": 0},
            "purpose": {"value": purpose, "creator": "", "last_set": 0},
        }
        with self._lock:
            self.channels[channel_id] = channel
        return channel

    def set_membership(self, channel_id: str, is_member: bool) -> None:
        """Invite the bot to a declared channel, or remove it."""
        with self._lock:
            self._declared(channel_id)["is_member"] = is_member

    def set_channel_members(self, channel_id: str, user_ids: list[str]) -> None:
        """Set who (besides the bot, per is_member) is in a declared channel: conversations.members."""
        with self._lock:
            self._declared(channel_id)
            self.channel_members[channel_id] = list(dict.fromkeys(user_ids))

    def _members_of(self, channel_id: str) -> list[str]:
        """Return the channel's members as conversations.members lists them (lock held)."""
        people = [user for user in self.channel_members.get(channel_id, []) if user != self.bot_user_id]
        return ([self.bot_user_id] if self.channels[channel_id]["is_member"] else []) + people

    def archive_channel(self, channel_id: str, archived: bool = True) -> None:
        """Archive a declared channel (or bring it back with `archived=False`)."""
        with self._lock:
            self._declared(channel_id)["is_archived"] = archived

    def _declared(self, channel_id: str) -> dict[str, Any]:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise KeyError(f"{channel_id} was not declared with add_channel()")
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
        """Return a `response_url` on the fake; its five uses and thirty minutes start now."""
        rid = response_id or f"R{next(self._ids):08d}"
        with self._lock:
            self._response_urls.issue(rid)
        return f"{self.root_url}/response/{rid}"

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Return copies of the messages currently in a channel (oldest first)."""
        with self._lock:
            return [dict(m) for m in self._messages.get(channel, [])]

    # ------------------------------------------------------------------ channels as methods see them

    def _lookup_channel(self, channel: str) -> str | None:
        """Map `#name` or an id to a known channel id, without creating anything (lock held)."""
        if channel.startswith("#"):
            return next((cid for cid, info in self.channels.items() if info["name"] == channel[1:]), None)
        return channel if channel in self.channels else None

    def _channel_for(self, method: str, raw: Any) -> str:
        """Resolve the channel a call acts in and answer as Slack would if the bot may not act there.

        Raises Rejection (not a violation: Slack's ordinary answer about the workspace).
        """
        channel = str(raw or "")
        not_found = "invalid_channel" if method == "files.completeUploadExternal" else "channel_not_found"
        with self._lock:
            if method == "chat.postMessage" and USER_ID.fullmatch(channel):
                # A user id posts to the app's DM with that user (chat.postMessage, "channel").
                channel = "D" + channel[1:]
                if channel not in self.channels:
                    self.add_channel(channel, f"dm-{raw}".lower(), is_private=True)
            known = self._lookup_channel(channel)
            if known is None:
                if channel.startswith("#") or not CHANNEL_ID.fullmatch(channel) or self.strict_channels:
                    raise Rejection(not_found, f"no channel {channel!r} in the workspace", violation=False)
                self.add_channel(channel, channel.lower(), is_private=channel.startswith("G"))
                known = channel
            info = self.channels[known]
            access = ACCESS.get(method)
            if access is None:
                return known
            if info["is_archived"] and access.archived:
                raise Rejection(access.archived, f"{known} is archived", violation=False)
            if not info["is_member"]:
                if info["is_private"]:
                    error = access.private_not_member
                elif access.public_scope is not None and access.public_scope in self.scopes:
                    error = None
                else:
                    error = access.public_not_member
                if error:
                    raise Rejection(error, f"the bot is not a member of {known}", violation=False)
        return known

    def _find_message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """Return the stored message with this ts in this channel (lock held by caller)."""
        for message in self._messages.get(channel, []):
            if message["ts"] == ts:
                return message
        return None

    def _next_ts(self) -> str:
        """Return a unique, increasing message timestamp in Slack's `seconds.micros` form."""
        with self._lock:
            now_us = int(time.time() * 1_000_000)
            self._last_ts_us = max(now_us, self._last_ts_us + 1)
            return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    def _new_id(self, prefix: str) -> str:
        """Return a new Slack-style object id such as `F00000012`."""
        return f"{prefix}{next(self._ids):08d}"
