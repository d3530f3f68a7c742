"""The fake Slack's methods of the incident workspace answer as Slack documents them, and refuse what
Slack's description (or, where it lacks the method, Slack's own method page) does not allow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.fakes import FakeSlack, method_spec
from tests.fakes.slack import METHOD_TIERS
from tests.fakes.slack.state import manifest_bot_scopes

TOKEN = "xoxb-test-token"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.url, timeout=5)


def test_bookmarks_are_described_by_hand_from_slacks_pages() -> None:
    add, edit = method_spec("bookmarks.add"), method_spec("bookmarks.edit")
    assert add is not None and edit is not None
    assert add.source == edit.source == "docs.slack.dev method reference"
    assert add.required == {"token", "channel_id", "title", "type"}
    assert edit.required == {"token", "channel_id", "bookmark_id"}
    assert {"too_many_bookmarks", "invalid_link"} <= add.errors and "not_found" in edit.errors
    assert METHOD_TIERS["bookmarks.add"] == METHOD_TIERS["bookmarks.edit"] == 2
    # The app asks for the scope they need; the published description has these methods' neighbours.
    assert "bookmarks:write" in manifest_bot_scopes()
    assert method_spec("views.publish") is not None and method_spec("chat.getPermalink") is not None


def test_bookmarks_add_and_edit(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("C0INC00001", "inc-1-x")
    mark = client.bookmarks_add(
        channel_id="C0INC00001", title="Runbook", type="link", link="https://r.example"
    )["bookmark"]
    edited = client.bookmarks_edit(
        channel_id="C0INC00001", bookmark_id=mark["id"], link="https://r.example/2"
    )
    assert edited["bookmark"]["link"] == "https://r.example/2" and edited["bookmark"]["title"] == "Runbook"
    with pytest.raises(SlackApiError, match="not_found"):
        client.bookmarks_edit(channel_id="C0INC00001", bookmark_id="Bk000NOPE", title="x")
    with pytest.raises(SlackApiError, match="invalid_link"):
        client.bookmarks_add(channel_id="C0INC00001", title="x", type="link", link="ftp://r.example")
    assert fake.violations == []
    # Missing a required argument, or one Slack does not take: the contract is broken, and said so.
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        client.api_call("bookmarks.add", json={"channel_id": "C0INC00001", "type": "link"})
    client.api_call(
        "bookmarks.add",
        json={"channel_id": "C0INC00001", "title": "x", "type": "link", "link": "https://x", "url": "y"},
    )
    assert [violation.error for violation in fake.violations] == ["invalid_arguments", "unknown_param"]


def test_bookmarks_need_their_scope(fake: FakeSlack) -> None:
    with FakeSlack(scopes={"chat:write"}) as without:
        client = WebClient(token=TOKEN, base_url=without.url, timeout=5)
        with pytest.raises(SlackApiError, match="missing_scope"):
            client.bookmarks_add(channel_id="C0INC00001", title="x", type="link", link="https://x")


def test_a_private_channel_the_bot_is_not_in_is_invisible_to_bookmarks(
    fake: FakeSlack, client: WebClient
) -> None:
    fake.add_channel("G0SECRET01", "secret", is_private=True, is_member=False)
    with pytest.raises(SlackApiError, match="channel_not_found"):
        client.bookmarks_add(channel_id="G0SECRET01", title="x", type="link", link="https://x")


def test_only_documented_errors_can_be_injected(fake: FakeSlack) -> None:
    fake.fail("bookmarks.add", "too_many_bookmarks")
    fake.fail("conversations.create", "restricted_action")
    with pytest.raises(ValueError, match=r"does not answer 'name_taken' for bookmarks\.add"):
        fake.fail("bookmarks.add", "name_taken")


def test_views_publish_keeps_each_users_home(fake: FakeSlack, client: WebClient) -> None:
    fake.add_user("U0ALICE001", "alice")
    view = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}
    first = client.views_publish(user_id="U0ALICE001", view=view)["view"]
    again = client.views_publish(user_id="U0ALICE001", view=view)["view"]
    assert first["id"] == again["id"] and fake.home_views["U0ALICE001"]["type"] == "home"
    too_many = {"type": "home", "blocks": [view["blocks"][0]] * 101}
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        client.views_publish(user_id="U0ALICE001", view=too_many)


def test_permalinks_of_messages_and_thread_replies(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C0INC00001", text="header")["ts"]
    reply = client.chat_postMessage(channel="C0INC00001", text="rca", thread_ts=parent)["ts"]
    link = client.chat_getPermalink(channel="C0INC00001", message_ts=reply)["permalink"]
    assert link.endswith(f"?thread_ts={parent}&cid=C0INC00001") and reply.replace(".", "") in link
    with pytest.raises(SlackApiError, match="message_not_found"):
        client.chat_getPermalink(channel="C0INC00001", message_ts="1.000001")
