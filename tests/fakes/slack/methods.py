"""The Web API methods the fake Slack implements (`_api_<method>`); others answer `{"ok": true}`."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

from tests.fakes.slack.models import FakeFile, Rejection, SlackCall
from tests.fakes.slack.spec import MethodSpec, truthy
from tests.fakes.slack.state import WorkspaceState

# conversations.create: "Channel names may only contain lowercase letters, numbers, hyphens, and
# underscores, and must be 80 characters or less" (docs.slack.dev/reference/methods/conversations.create).
CHANNEL_NAME = re.compile(r"[a-z0-9_-]+")
MAX_CHANNEL_NAME = 80
# bookmarks.add: "Conversations are limited to 100 bookmarks"
# (docs.slack.dev/reference/methods/bookmarks.add).
MAX_BOOKMARKS = 100
# conversations.members: `limit` defaults to 100; the fake answers at most 1000 ids a page.
MEMBERS_PAGE = 100
MAX_MEMBERS_PAGE = 1000


def _refuse(error: str, reason: str) -> Rejection:
    """Slack's ordinary answer about the workspace (not the caller's contract violation)."""
    return Rejection(error, reason, violation=False)


class WebApiMethods(WorkspaceState):
    """Method implementations for FakeSlack, over the workspace it holds."""

    # Set by FakeSlack.__init__.
    team_domain: str
    app_id: str
    files: dict[str, FakeFile]
    pins: set[tuple[str, str]]
    views: dict[str, dict[str, Any]]
    bookmarks: dict[str, list[dict[str, Any]]]
    home_views: dict[str, dict[str, Any]]

    # ------------------------------------------------------------------ auth, chat, pins

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
        channel = self._channel_for(call.method, call.params["channel"])
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
        self._channel_for(call.method, call.params["channel"])
        return {"ok": True, "message_ts": self._next_ts()}

    def _api_chat_update(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Replace the text/blocks of a stored message."""
        channel = self._channel_for(call.method, call.params["channel"])
        ts = str(call.params["ts"])
        with self._lock:
            message = self._find_message(channel, ts)
            if message is None:
                raise _refuse("message_not_found", f"no message {ts} in {channel}")
            for key in ("text", "blocks", "attachments", "metadata"):
                if key in call.params:
                    message[key] = call.params[key]
            message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
            echoed = dict(message)
        return {"ok": True, "channel": channel, "ts": ts, "text": echoed["text"], "message": echoed}

    def _api_chat_delete(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Delete a stored message."""
        channel = self._channel_for(call.method, call.params.get("channel"))
        ts = str(call.params.get("ts") or "")
        with self._lock:
            message = self._find_message(channel, ts)
            if message is None:
                raise _refuse("message_not_found", f"no message {ts} in {channel}")
            self._messages[channel].remove(message)
            self.pins.discard((channel, ts))
        return {"ok": True, "channel": channel, "ts": ts}

    def _api_pins_add(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Pin a stored message."""
        channel = self._channel_for(call.method, call.params["channel"])
        ts = call.params.get("timestamp")
        if not ts:
            raise _refuse("no_item_specified", "pins.add needs timestamp")
        with self._lock:
            if self._find_message(channel, str(ts)) is None:
                raise _refuse("message_not_found", f"no message {ts} in {channel}")
            if (channel, str(ts)) in self.pins:
                raise _refuse("already_pinned", f"{ts} is already pinned in {channel}")
            self.pins.add((channel, str(ts)))
        return {"ok": True}

    # ------------------------------------------------------------------ conversations

    def _known_channel(self, raw: Any) -> dict[str, Any]:
        """Return a channel the workspace has (declared or posted into), or answer channel_not_found."""
        with self._lock:
            channel = self.channels.get(str(raw or ""))
        if channel is None:
            raise _refuse("channel_not_found", f"no channel {raw!r} in the workspace")
        return channel

    def _need_scope(self, *any_of: str) -> None:
        """Answer missing_scope unless the app was granted one of these scopes."""
        if not self.scopes & set(any_of):
            raise _refuse("missing_scope", f"needs {' or '.join(any_of)}; the app has {sorted(self.scopes)}")

    def _api_conversations_info(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Answer for a channel added with add_channel() or posted into."""
        channel = self._known_channel(call.params.get("channel"))
        self._channel_for(call.method, channel["id"])
        info = dict(channel)
        if truthy(call.params.get("include_num_members", False)):
            info["num_members"] = 1
        return {"ok": True, "channel": info}

    def _api_conversations_open(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Open (or resume) a DM with one user (a D id derived from the user id), or a group DM."""
        users = sorted(user for user in str(call.params.get("users") or "").split(",") if user)
        if not users:
            raise _refuse("users_list_not_supplied", "conversations.open needs users (or channel)")
        if len(users) == 1:
            channel_id, name = "D" + users[0][1:], f"dm-{users[0].lower()}"
        else:
            channel_id, name = "G" + "".join(u[1:4] for u in users)[:20], "mpdm-" + "--".join(users).lower()
        with self._lock:
            if channel_id not in self.channels:
                self.add_channel(channel_id, name, is_private=True)
                self.channels[channel_id]["is_mpim"] = len(users) > 1
        return {"ok": True, "channel": {"id": channel_id}}

    def _api_conversations_replies(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Return a thread (parent first) from what was posted."""
        channel = self._known_channel(call.params.get("channel"))["id"]
        self._channel_for(call.method, channel)
        ts = str(call.params.get("ts") or "")
        with self._lock:
            parent = self._find_message(channel, ts)
            if parent is None:
                raise _refuse("thread_not_found", f"no message {ts} in {channel}")
            replies = [m for m in self._messages[channel] if m.get("thread_ts") == ts and m["ts"] != ts]
            messages = [dict(parent)] + [dict(m) for m in replies]
        return {"ok": True, "messages": messages, "has_more": False, "response_metadata": {"next_cursor": ""}}

    def _api_conversations_members(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """List a channel's members a page at a time (`limit`, default 100; `cursor` from the last page)."""
        channel = self._channel_for(call.method, call.params.get("channel"))
        with self._lock:
            info = self.channels[channel]
            if info["is_im"]:
                self._need_scope("im:read")
            elif info["is_mpim"]:
                self._need_scope("mpim:read")
            else:
                self._need_scope("groups:read" if info["is_private"] else "channels:read")
            members = self._members_of(channel)
        try:
            limit = int(call.params.get("limit") or MEMBERS_PAGE)
            start = int(base64.b64decode(str(call.params.get("cursor") or "")).decode() or 0)
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise _refuse("invalid_cursor", "the cursor is not one this fake gave") from None
        if start < 0:
            raise _refuse("invalid_cursor", "the cursor is not one this fake gave")
        if limit < 1:
            raise _refuse("invalid_limit", f"limit={limit}")
        # "Fewer than the requested number of items may be returned": at most 1000 a page here.
        end = start + min(limit, MAX_MEMBERS_PAGE)
        cursor = base64.b64encode(str(end).encode()).decode() if end < len(members) else ""
        return {"ok": True, "members": members[start:end], "response_metadata": {"next_cursor": cursor}}

    def _api_conversations_join(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Join a public channel (scope channels:join), as Slack lets an app do itself."""
        self._need_scope("channels:join")
        channel = self._known_channel(call.params.get("channel"))
        with self._lock:
            if channel["is_private"]:
                raise _refuse("method_not_supported_for_channel_type", "an app cannot join a private channel")
            if channel["is_archived"]:
                raise _refuse("is_archived", f"{channel['id']} is archived")
            channel["is_member"] = True
            return {"ok": True, "channel": dict(channel)}

    def _api_conversations_invite(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Invite users to a channel the bot is in (scope channels:manage, or groups:write if private)."""
        channel = self._known_channel(call.params.get("channel"))
        self._need_scope("groups:write" if channel["is_private"] else "channels:manage")
        users = [user for user in str(call.params.get("users") or "").split(",") if user]
        with self._lock:
            if channel["is_archived"]:
                raise _refuse("is_archived", f"{channel['id']} is archived")
            if not channel["is_member"]:
                raise _refuse("not_in_channel", f"the bot is not a member of {channel['id']}")
            if self.bot_user_id in users:
                raise _refuse("cant_invite_self", "the bot cannot invite itself")
            known = self.channel_members.setdefault(channel["id"], [])
            known += [user for user in users if user not in known]
            return {"ok": True, "channel": dict(channel)}

    def _api_conversations_create(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Create a channel the bot is in (scope channels:manage, or groups:write if private)."""
        is_private = truthy(call.params.get("is_private", False))
        self._need_scope("groups:write" if is_private else "channels:manage")
        name = str(call.params.get("name") or "")
        if not name:
            raise _refuse("invalid_name_required", "a channel needs a name")
        if len(name) > MAX_CHANNEL_NAME:
            raise _refuse("invalid_name_maxlength", f"at most {MAX_CHANNEL_NAME} characters")
        if not CHANNEL_NAME.fullmatch(name):
            raise _refuse("invalid_name_specials", f"{name!r}: lowercase letters, digits, - and _ only")
        if not name.strip("-_"):
            raise _refuse("invalid_name_punctuation", f"{name!r} is only punctuation")
        with self._lock:
            if any(info["name"] == name for info in self.channels.values()):
                raise _refuse("name_taken", f"a channel is already named {name}")
            channel = self.add_channel(self._new_id("C"), name, is_private=is_private)
            return {"ok": True, "channel": dict(channel)}

    def _api_conversations_archive(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Archive a channel (scope channels:manage, or groups:write if private)."""
        channel = self._known_channel(call.params.get("channel"))
        self._need_scope("groups:write" if channel["is_private"] else "channels:manage")
        with self._lock:
            if channel["is_archived"]:
                raise _refuse("already_archived", f"{channel['id']} is already archived")
            channel["is_archived"] = True
        return {"ok": True}

    # ------------------------------------------------------------------ users and groups

    def _api_users_info(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Answer for a user added with add_user()."""
        with self._lock:
            user = self.users.get(str(call.params.get("user") or ""))
        if user is None:
            raise _refuse("user_not_found", f"no user {call.params.get('user')!r}")
        return {"ok": True, "user": user}

    def _api_users_list(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """List the users added with add_user(), a page at a time (`limit`, `cursor`) as Slack does."""
        with self._lock:
            members = sorted(self.users.values(), key=lambda user: str(user["id"]))
        limit = max(1, min(int(call.params.get("limit") or 200), 1000))
        start = int(call.params.get("cursor") or 0) if str(call.params.get("cursor") or "0").isdigit() else 0
        page = members[start : start + limit]
        following = str(start + limit) if start + limit < len(members) else ""
        return {"ok": True, "members": page, "response_metadata": {"next_cursor": following}}

    def _api_usergroups_users_list(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Answer with the membership set by set_usergroup()."""
        with self._lock:
            members = self.usergroups.get(str(call.params["usergroup"]))
        if members is None:
            raise _refuse("no_such_subteam", f"no user group {call.params['usergroup']!r}")
        return {"ok": True, "users": list(members)}

    # ------------------------------------------------------------------ bookmarks, permalinks

    def _api_bookmarks_add(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Add a link bookmark to a channel (scope bookmarks:write; "link" is the one type Slack takes)."""
        self._need_scope("bookmarks:write")
        channel = self._channel_for(call.method, call.params["channel_id"])
        if call.params.get("type") != "link":
            raise _refuse("invalid_bookmark_type", f"type {call.params.get('type')!r}: only link")
        link = str(call.params.get("link") or "")
        if not link.startswith(("http://", "https://")):
            raise _refuse("invalid_link", "a link begins with http:// or https://")
        with self._lock:
            marks = self.bookmarks.setdefault(channel, [])
            if len(marks) >= MAX_BOOKMARKS:
                raise _refuse("too_many_bookmarks", f"{channel} has {MAX_BOOKMARKS} bookmarks")
            mark = {
                "id": self._new_id("Bk"),
                "channel_id": channel,
                "title": str(call.params["title"]),
                "link": link,
                "emoji": call.params.get("emoji"),
                "icon_url": None,
                "type": "link",
                "entity_id": None,
                "date_created": int(time.time()),
                "date_updated": 0,
                "rank": "g",
                "last_updated_by_user_id": self.bot_user_id,
                "last_updated_by_team_id": self.team_id,
                "shortcut_id": None,
                "app_id": self.app_id,
            }
            marks.append(mark)
            return {"ok": True, "bookmark": dict(mark)}

    def _api_bookmarks_edit(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Change a bookmark's title or link (not_found for a bookmark the channel does not have)."""
        self._need_scope("bookmarks:write")
        channel = self._channel_for(call.method, call.params["channel_id"])
        link = call.params.get("link")
        if link is not None and not str(link).startswith(("http://", "https://")):
            raise _refuse("invalid_link", "a link begins with http:// or https://")
        with self._lock:
            mark = next(
                (
                    item
                    for item in self.bookmarks.get(channel, [])
                    if item["id"] == call.params["bookmark_id"]
                ),
                None,
            )
            if mark is None:
                raise _refuse("not_found", f"no bookmark {call.params['bookmark_id']!r} in {channel}")
            for key in ("title", "link", "emoji"):
                if call.params.get(key) is not None:
                    mark[key] = call.params[key]
            mark["date_updated"] = int(time.time())
            return {"ok": True, "bookmark": dict(mark)}

    def _api_chat_getPermalink(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Answer the permalink of a stored message, as Slack writes them (thread replies included)."""
        channel = self._channel_for(call.method, call.params["channel"])
        ts = str(call.params["message_ts"])
        with self._lock:
            message = self._find_message(channel, ts)
        if message is None:
            raise _refuse("message_not_found", f"no message {ts} in {channel}")
        link = f"https://{self.team_domain}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        thread = message.get("thread_ts")
        if thread and thread != ts:
            link += f"?thread_ts={thread}&cid={channel}"
        return {"ok": True, "channel": channel, "permalink": link}

    # ------------------------------------------------------------------ views

    def _api_views_publish(self, call: SlackCall, spec: MethodSpec) -> dict[str, Any]:
        """Publish a user's Home tab (kept by user id in `home_views`) and return it as a view."""
        user = str(call.params["user_id"])
        with self._lock:
            if user not in self.users:
                raise _refuse("invalid_arguments", f"no user {user!r} in the workspace")
            previous = self.home_views.get(user)
        view_id = previous["id"] if previous else self._new_id("V")
        stored = self._store_view(call.params["view"], view_id, previous)
        with self._lock:
            self.home_views[user] = stored
        return {"ok": True, "view": stored}

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
                raise _refuse("not_found", f"no view {view_id or external_id!r}")
            if call.params.get("hash") and call.params["hash"] != previous["hash"]:
                raise _refuse("hash_conflict", "the view changed since that hash")
        if "view" not in call.params:
            raise Rejection("invalid_arguments", "[ERROR] missing required field: view")
        return {"ok": True, "view": self._store_view(call.params["view"], previous["id"], previous)}

    # ------------------------------------------------------------------ files

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
        named = [c for c in str(call.params.get("channels") or "").split(",") if c]
        if call.params.get("channel_id"):
            named.append(str(call.params["channel_id"]))
        channels = [self._channel_for(call.method, c) for c in named]
        thread_ts = call.params.get("thread_ts")
        results = []
        with self._lock:
            for entry in entries:
                fake_file = self.files.get(entry["id"])
                if fake_file is None or fake_file.content is None:
                    raise _refuse("file_not_found", f"no uploaded file {entry['id']}")
            ts = self._next_ts() if channels else None
            for entry in entries:
                fake_file = self.files[entry["id"]]
                fake_file.title = entry.get("title") or fake_file.filename
                fake_file.completed = True
                fake_file.channels = list(channels)
                fake_file.thread_ts = str(thread_ts) if thread_ts else None
                fake_file.initial_comment = call.params.get("initial_comment")
                results.append(self._file_object(fake_file, ts))
            for channel in channels:
                share = self._message(
                    {"text": call.params.get("initial_comment"), "thread_ts": thread_ts}, ts or ""
                )
                share["files"] = results
                share["upload"] = True
                self._messages.setdefault(channel, []).append(share)
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
