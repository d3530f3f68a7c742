"""The fake Slack Web API answers real slack_sdk / slack_bolt clients and enforces Slack's spec."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import builtin_async_handlers
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.slack_api import build_client
from bot.observability import BotMetrics
from bot.slack.posting import ChannelPacer
from tests.conftest import serve_app
from tests.fakes import (
    FakeSlack,
    ManualClock,
    block_actions_payload,
    method_spec,
    signed_interaction_request,
    signed_slash_command_request,
    specs_dir,
    validate_blocks,
)
from tests.fakes.slack import GENERIC_ERRORS

TOKEN = "xoxb-test-token"
SIGNING_SECRET = "test-signing-secret"
SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*API* is healthy"}}


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    """Run one fake Slack per test."""
    with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    """Return a sync slack_sdk client pointed at the fake."""
    return WebClient(token=TOKEN, base_url=fake.url, timeout=5)


@pytest.fixture
def aclient(fake: FakeSlack) -> AsyncWebClient:
    """Return an async slack_sdk client pointed at the fake."""
    return AsyncWebClient(token=TOKEN, base_url=fake.url, timeout=5)


# ---------------------------------------------------------------- spec wiring


def test_specs_are_found_beside_the_repo() -> None:
    assert (specs_dir() / "slack" / "web_api_openapi_v2.json").is_file()
    spec = method_spec("chat.postMessage")
    assert spec is not None and "channel" in spec.required


def test_specs_dir_honours_the_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("CHATOPS_SPECS_DIR", str(tmp_path))
    assert specs_dir() == tmp_path.resolve()
    monkeypatch.setenv("CHATOPS_SPECS_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="CHATOPS_SPECS_DIR"):
        specs_dir()


def test_upload_methods_missing_from_the_spec_use_documented_params() -> None:
    get_url = method_spec("files.getUploadURLExternal")
    complete = method_spec("files.completeUploadExternal")
    assert get_url is not None and get_url.required == {"token", "filename", "length"}
    assert complete is not None and complete.required == {"token", "files"}
    assert method_spec("chat.noSuchMethod") is None


# ---------------------------------------------------------------- Web API with slack_sdk


def test_valid_post_is_recorded_with_decoded_blocks(fake: FakeSlack, client: WebClient) -> None:
    response = client.chat_postMessage(channel="C0INCIDENT", text="healthy", blocks=[SECTION])

    assert response["ok"] and response["channel"] == "C0INCIDENT"
    assert response["message"]["blocks"] == [SECTION]
    [call] = fake.calls_to("chat.postMessage")
    assert call.params["blocks"] == [SECTION]
    assert call.params["channel"] == "C0INCIDENT"
    assert call.token == TOKEN
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert fake.violations == []


def test_timestamps_are_unique_and_increasing(client: WebClient) -> None:
    # One channel each: five at once into one channel is past Slack's burst (see the limits below).
    stamps = [client.chat_postMessage(channel=f"C{i}", text=str(i))["ts"] for i in range(5)]
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 5


@pytest.mark.asyncio
async def test_async_client_auth_test_and_post(fake: FakeSlack, aclient: AsyncWebClient) -> None:
    auth = await aclient.auth_test()
    assert auth["ok"] and auth["user_id"] == fake.bot_user_id and auth["bot_id"] == fake.bot_id
    assert auth["team_id"] == fake.team_id and auth["url"].startswith("https://")

    await aclient.chat_postMessage(channel="C0INCIDENT", text="hi", blocks=[SECTION])
    call = await fake.wait_for_call_async("chat.postMessage", lambda c: c.params["text"] == "hi")
    assert call.response is not None and call.response["ok"]
    assert fake.violations == []


def test_missing_required_channel_is_rejected(fake: FakeSlack, client: WebClient) -> None:
    # chat_postMessage() itself insists on channel, so go through api_call as a buggy caller would.
    with pytest.raises(SlackApiError) as error:
        client.api_call("chat.postMessage", params={"text": "no channel"})

    assert error.value.response["error"] == "invalid_arguments"
    assert fake.violations[0].method == "chat.postMessage"
    assert "channel" in fake.violations[0].reason


def test_invalid_blocks_are_rejected(fake: FakeSlack, client: WebClient) -> None:
    too_long = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    with pytest.raises(SlackApiError) as error:
        client.chat_postMessage(channel="C1", text="t", blocks=[too_long])
    assert error.value.response["error"] == "invalid_blocks"

    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel="C1", text="t", blocks=[{"type": "no_such_block"}])
    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel="C1", text="t", blocks=[SECTION] * 51)

    assert [v.error for v in fake.violations] == ["invalid_blocks"] * 3
    assert "3000" in fake.violations[0].reason
    assert "50" in fake.violations[2].reason
    assert fake.calls_to("chat.postMessage")[0].status == 200  # Slack's errors come with HTTP 200


def test_validate_blocks_accepts_fifty() -> None:
    assert validate_blocks([SECTION] * 50) == []
    assert validate_blocks('[{"type": "divider"}]') == []
    assert validate_blocks("not json")


def test_message_needs_text_or_blocks(fake: FakeSlack, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as error, pytest.warns(UserWarning, match="text"):
        client.chat_postMessage(channel="C1")
    assert error.value.response["error"] == "no_text"
    assert fake.violations[0].error == "no_text"


def test_unknown_method_and_missing_token(fake: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as error:
        WebClient(token=TOKEN, base_url=fake.url).api_call("chat.postMesage", params={"channel": "C1"})
    assert error.value.response["error"] == "unknown_method"

    with pytest.raises(SlackApiError) as error:
        WebClient(base_url=fake.url).chat_postMessage(channel="C1", text="x")
    assert error.value.response["error"] == "not_authed"
    assert [v.error for v in fake.violations] == ["unknown_method", "not_authed"]


def test_token_in_the_body_is_accepted(fake: FakeSlack) -> None:
    WebClient(base_url=fake.url).api_call("auth.test", params={"token": TOKEN})
    [call] = fake.calls_to("auth.test")
    assert call.token == TOKEN and "token" not in call.params
    assert fake.violations == []


def test_json_body_on_form_only_method_is_rejected(fake: FakeSlack, client: WebClient) -> None:
    # The spec lists only form encoding for conversations.info; Slack would drop a JSON body.
    fake.add_channel("C1", "incidents")
    with pytest.raises(SlackApiError):
        client.api_call("conversations.info", json={"channel": "C1"})
    assert "application/json" in fake.violations[0].reason
    assert client.conversations_info(channel="C1")["channel"]["name"] == "incidents"


def test_wrong_http_verb_is_rejected(fake: FakeSlack) -> None:
    response = httpx.put(fake.url + "chat.postMessage", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 405
    assert fake.violations[0].error == "method_not_allowed"


def test_thread_update_pin_delete(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C1", text="incident declared")
    client.chat_postMessage(channel="C1", text="update 1", thread_ts=parent["ts"])
    client.chat_update(channel="C1", ts=parent["ts"], text="incident declared (SEV2)")
    assert client.pins_add(channel="C1", timestamp=parent["ts"])["ok"]
    with pytest.raises(SlackApiError, match="already_pinned"):
        client.pins_add(channel="C1", timestamp=parent["ts"])

    thread = client.conversations_replies(channel="C1", ts=parent["ts"])["messages"]
    assert [m["text"] for m in thread] == ["incident declared (SEV2)", "update 1"]
    assert thread[0]["reply_count"] == 1

    ephemeral = client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert ephemeral["message_ts"]
    assert client.chat_delete(channel="C1", ts=parent["ts"])["ok"]
    with pytest.raises(SlackApiError, match="message_not_found"):
        client.chat_update(channel="C1", ts=parent["ts"], text="gone")
    assert fake.violations == []


def test_views_open_and_update(fake: FakeSlack, client: WebClient) -> None:
    view = {
        "type": "modal",
        "callback_id": "incident_declare",
        "title": {"type": "plain_text", "text": "Declare incident"},
        "submit": {"type": "plain_text", "text": "Declare"},
        "blocks": [
            {
                "type": "input",
                "block_id": "title",
                "label": {"type": "plain_text", "text": "Title"},
                "element": {"type": "plain_text_input", "action_id": "value"},
            }
        ],
    }
    opened = client.views_open(trigger_id="123.456.abc", view=view)["view"]
    assert opened["id"] and opened["callback_id"] == "incident_declare"

    updated = client.views_update(view_id=opened["id"], hash=opened["hash"], view=view)["view"]
    assert updated["id"] == opened["id"] and updated["hash"] != opened["hash"]
    with pytest.raises(SlackApiError, match="hash_conflict"):
        client.views_update(view_id=opened["id"], hash=opened["hash"], view=view)
    assert fake.violations == []

    # Slack answers an invalid view, its blocks included, with invalid_arguments (views.* document
    # no invalid_blocks), the reasons in response_metadata.messages.
    bad = {**view, "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]}
    with pytest.raises(SlackApiError, match="invalid_arguments") as error:
        client.views_open(trigger_id="123.456.abc", view=bad)
    assert "150" in error.value.response["response_metadata"]["messages"][0]
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        client.views_open(
            trigger_id="123.456.abc", view={**view, "title": {"type": "plain_text", "text": "t" * 25}}
        )


def test_users_usergroups_and_channels(fake: FakeSlack, client: WebClient) -> None:
    fake.add_user("U0ALICE", "alice", real_name="Alice Doe", is_admin=True)
    fake.set_usergroup("S0ONCALL", ["U0ALICE"])
    fake.add_channel("G0PRIVATE", "sec-incidents", is_private=True)

    assert client.users_info(user="U0ALICE")["user"]["profile"]["real_name"] == "Alice Doe"
    assert client.usergroups_users_list(usergroup="S0ONCALL")["users"] == ["U0ALICE"]
    assert client.conversations_info(channel="G0PRIVATE")["channel"]["is_private"] is True
    with pytest.raises(SlackApiError, match="user_not_found"):
        client.users_info(user="U0NOBODY")
    with pytest.raises(SlackApiError, match="no_such_subteam"):
        client.usergroups_users_list(usergroup="S0NONE")
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        client.api_call("usergroups.users.list", http_verb="GET", params={})
    assert [v.reason for v in fake.violations] == ["[ERROR] missing required field: usergroup"]


def test_files_upload_v2_runs_the_external_flow(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("C0INCIDENT", "incidents")
    response = client.files_upload_v2(
        channel="C0INCIDENT",
        content="timeline\n",
        filename="timeline.md",
        title="Timeline",
        initial_comment="RCA",
    )

    file_id = response["file"]["id"]
    assert fake.files[file_id].content == b"timeline\n"
    assert fake.files[file_id].completed and fake.files[file_id].channels == ["C0INCIDENT"]
    assert [c.method for c in fake.calls] == ["files.getUploadURLExternal", "files.completeUploadExternal"]
    assert fake.calls_to("files.completeUploadExternal")[0].params["files"] == [
        {"id": file_id, "title": "Timeline"}
    ]
    shared = fake.messages("C0INCIDENT")[-1]
    assert shared["text"] == "RCA" and shared["files"][0]["id"] == file_id
    assert fake.violations == []


@pytest.mark.asyncio
async def test_async_files_upload_v2(fake: FakeSlack, aclient: AsyncWebClient) -> None:
    response = await aclient.files_upload_v2(channel="C1", content=b"\x00\x01chart", filename="chart.png")
    assert fake.files[response["file"]["id"]].content == b"\x00\x01chart"
    assert fake.violations == []


def test_complete_upload_checks_the_files_array(fake: FakeSlack, client: WebClient) -> None:
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        client.api_call("files.completeUploadExternal", params={"files": '[{"title": "no id"}]'})
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        client.api_call("files.getUploadURLExternal", params={"filename": "a.txt"})
    with pytest.raises(SlackApiError, match="file_not_found"):
        client.files_completeUploadExternal(files=[{"id": "F0UNKNOWN"}])
    assert len(fake.violations) == 2


# ---------------------------------------------------------------- faults


@pytest.mark.asyncio
async def test_rate_limit_surfaces_as_429(fake: FakeSlack, aclient: AsyncWebClient) -> None:
    fake.rate_limit("chat.postMessage", times=1, retry_after=7)
    with pytest.raises(SlackApiError) as error:
        await aclient.chat_postMessage(channel="C1", text="x")
    assert error.value.response.status_code == 429
    assert error.value.response.headers["Retry-After"] == "7"
    assert error.value.response["error"] == "ratelimited"

    assert (await aclient.chat_postMessage(channel="C1", text="x"))["ok"]
    assert fake.violations == []  # a fault is not the client's fault


def test_programmed_error(fake: FakeSlack, client: WebClient) -> None:
    fake.fail("chat.postMessage", "channel_not_found", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError, match="channel_not_found"):
            client.chat_postMessage(channel="C1", text="x")
    assert client.chat_postMessage(channel="C1", text="x")["ok"]
    fake.fail("*", "fatal_error")
    with pytest.raises(SlackApiError, match="fatal_error"):
        client.auth_test()
    fake.clear_faults()
    assert client.auth_test()["ok"]


def test_hang_trips_the_client_timeout(fake: FakeSlack) -> None:
    fake.hang("chat.postMessage", 3)
    impatient = WebClient(token=TOKEN, base_url=fake.url, timeout=1)
    with pytest.raises(TimeoutError):
        impatient.chat_postMessage(channel="C1", text="x")
    # The client gave up while the fake still held its answer: the call was received, not answered.
    [call] = fake.calls_to("chat.postMessage")
    assert call.status is None and call.response is None


def test_respond_with_override(fake: FakeSlack, client: WebClient) -> None:
    fake.respond_with("team.info", {"ok": True, "team": {"id": "T1", "name": "chatops"}})
    assert client.team_info()["team"]["name"] == "chatops"


# ---------------------------------------------------------------- waiting and response_url


def test_wait_for_call_sees_a_later_call(fake: FakeSlack, client: WebClient) -> None:
    def post_later() -> None:
        time.sleep(0.2)
        client.chat_postMessage(channel="C1", text="later")

    thread = threading.Thread(target=post_later)
    thread.start()
    call = fake.wait_for_call("chat.postMessage", lambda c: c.params.get("text") == "later", timeout=5)
    thread.join()
    assert call.params["channel"] == "C1"
    with pytest.raises(AssertionError, match=r"no matching chat\.delete"):
        fake.wait_for_call("chat.delete", timeout=0.1)


@pytest.mark.asyncio
async def test_response_url_posts_are_recorded(fake: FakeSlack) -> None:
    url = fake.response_url("cmd-1")
    response = await AsyncWebhookClient(url).send(text="done", response_type="in_channel", blocks=[SECTION])
    assert response.status_code == 200
    post = await fake.wait_for_response_post_async("cmd-1")
    assert post.body["response_type"] == "in_channel" and post.body["blocks"] == [SECTION]

    bad = await AsyncWebhookClient(url).send(blocks=[{"type": "bogus"}])
    assert bad.status_code == 400
    assert fake.violations[0].method == "response_url"


# ---------------------------------------------------------------- signed requests through Bolt


@asynccontextmanager
async def serve_bolt(app: AsyncApp) -> AsyncIterator[str]:
    """Serve a Bolt app through its Starlette adapter behind uvicorn on loopback; yield its URL."""
    handler = AsyncSlackRequestHandler(app)

    async def endpoint(request: Request) -> Response:
        return await handler.handle(request)

    web_app = Starlette(routes=[Route("/slack/events", endpoint=endpoint, methods=["POST"])])
    async with serve_app(web_app) as base:
        yield f"{base}/slack/events"


def make_bolt_app(fake: FakeSlack, ran: list[str]) -> AsyncApp:
    """Build a tiny Bolt app that posts to the fake from its /health and button handlers."""
    app = AsyncApp(client=AsyncWebClient(token=TOKEN, base_url=fake.url), signing_secret=SIGNING_SECRET)

    @app.command("/health")
    async def health(
        ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await ack()
        ran.append(command["text"])
        await client.chat_postMessage(channel=command["channel_id"], text="all green")
        await respond("posted")

    @app.action("ack_incident")
    async def ack_incident(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        ran.append(body["actions"][0]["value"])
        await client.chat_postMessage(channel=body["channel"]["id"], text="acknowledged")

    return app


@pytest.mark.asyncio
async def test_bolt_accepts_a_signed_slash_command(fake: FakeSlack) -> None:
    ran: list[str] = []
    async with serve_bolt(make_bolt_app(fake, ran)) as url, httpx.AsyncClient() as http:
        body, headers = signed_slash_command_request(
            SIGNING_SECRET,
            "/health",
            "full",
            channel_id="C0INCIDENT",
            response_url=fake.response_url("health-1"),
        )
        response = await http.post(url, content=body, headers=headers)
        assert response.status_code == 200

        # Bolt answers at ack(); the handler's own calls land afterwards.
        call = await fake.wait_for_call_async("chat.postMessage")
        # Bolt's per-request client adds team_id: not in this older spec, but Slack takes it on
        # every method (documented.EVERY_METHOD_PARAMS), so it is not an unknown parameter.
        assert call.params == {"channel": "C0INCIDENT", "text": "all green", "team_id": fake.team_id}
        assert call.unknown_params == []
        post = await fake.wait_for_response_post_async("health-1")
        assert post.body["text"] == "posted"

    assert ran == ["full"]
    assert fake.calls_to("auth.test"), "Bolt authorizes through auth.test on the first request"
    assert fake.violations == []


@pytest.mark.asyncio
async def test_bolt_rejects_bad_signature_and_stale_timestamp(fake: FakeSlack) -> None:
    ran: list[str] = []
    async with serve_bolt(make_bolt_app(fake, ran)) as url, httpx.AsyncClient() as http:
        body, headers = signed_slash_command_request("wrong-secret", "/health")
        assert (await http.post(url, content=body, headers=headers)).status_code == 401

        six_minutes_ago = int(time.time()) - 6 * 60
        body, headers = signed_slash_command_request(SIGNING_SECRET, "/health", timestamp=six_minutes_ago)
        assert (await http.post(url, content=body, headers=headers)).status_code == 401

        body, headers = signed_slash_command_request(SIGNING_SECRET, "/health", "tampered")
        assert (await http.post(url, content=body + b"x", headers=headers)).status_code == 401

        await asyncio.sleep(0.2)  # give a wrongly started handler time to show up
    assert ran == []
    assert fake.calls == []


@pytest.mark.asyncio
async def test_bolt_accepts_a_signed_block_action(fake: FakeSlack) -> None:
    ran: list[str] = []
    async with serve_bolt(make_bolt_app(fake, ran)) as url, httpx.AsyncClient() as http:
        payload = block_actions_payload("ack_incident", "INC-7", channel_id="C0INCIDENT")
        body, headers = signed_interaction_request(SIGNING_SECRET, payload)
        assert (await http.post(url, content=body, headers=headers)).status_code == 200
        call = await fake.wait_for_call_async("chat.postMessage")
    assert call.params["text"] == "acknowledged"
    assert ran == ["INC-7"]


# ---------------------------------------------------------------- what Slack documents beyond the spec


def test_an_argument_slack_does_not_document_is_answered_and_recorded(
    fake: FakeSlack, client: WebClient
) -> None:
    answer = client.api_call(
        "chat.postMessage", params={"channel": "C1", "text": "hi", "colour": "red", "team_id": fake.team_id}
    )
    assert answer["ok"]  # Slack ignores it...
    [call] = fake.calls_to("chat.postMessage")
    assert call.unknown_params == ["colour"]  # ...team_id it documents for every method
    [violation] = fake.violations
    assert (violation.method, violation.error) == ("chat.postMessage", "unknown_param")
    assert "colour" in violation.reason


def test_error_names_come_from_the_spec_and_slacks_method_pages() -> None:
    post = method_spec("chat.postMessage")
    assert post is not None and {"not_in_channel", "is_archived", "invalid_blocks"} <= post.errors
    assert "ratelimited" in post.errors and "team_id" in post.params  # on every method
    upload = method_spec("files.completeUploadExternal")
    assert upload is not None and {"invalid_channel", "not_in_channel"} <= upload.errors
    views = method_spec("views.update")
    assert views is not None and {"hash_conflict", "not_found"} <= views.errors
    assert "invalid_blocks" not in views.errors
    assert {"channel_not_found", "invalid_blocks"}.isdisjoint(GENERIC_ERRORS)


def test_fail_refuses_an_error_slack_never_sends_for_that_method(fake: FakeSlack) -> None:
    fake.fail("files.completeUploadExternal", "not_in_channel")
    fake.fail("*", "service_unavailable")
    for method, error in [
        ("chat.postMessage", "no_such_error"),
        ("views.open", "invalid_blocks"),
        ("usergroups.users.list", "channel_not_found"),
        ("*", "channel_not_found"),  # not an error every method answers
        ("chat.noSuchMethod", "fatal_error"),
    ]:
        with pytest.raises(ValueError, match=error if method != "chat.noSuchMethod" else "no Web API method"):
            fake.fail(method, error)


def test_an_undocumented_error_from_an_override_is_a_violation(fake: FakeSlack, client: WebClient) -> None:
    fake.respond_with("users.info", {"ok": False, "error": "user_vanished"})
    with pytest.raises(SlackApiError, match="user_vanished"):
        client.users_info(user="U1")
    assert [(v.method, v.error) for v in fake.violations] == [("users.info", "undocumented_error")]


def test_socket_mode_connections_need_an_app_level_token(fake: FakeSlack) -> None:
    fake.respond_with("apps.connections.open", {"ok": True, "url": "ws://127.0.0.1:1/link"})
    with pytest.raises(SlackApiError, match="not_allowed_token_type"):
        WebClient(token=TOKEN, base_url=fake.url).apps_connections_open(app_token=TOKEN)
    answer = WebClient(base_url=fake.url).apps_connections_open(app_token="xapp-1-A1-1-abc")
    assert answer["url"].startswith("ws://")


# ---------------------------------------------------------------- membership, as Slack answers it


def test_a_public_channel_the_bot_is_not_in(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("C0PUBLIC01", "general", is_member=False)
    # app.yaml asks for chat:write.public: posting there needs no invitation...
    assert "chat:write.public" in fake.scopes
    posted = client.chat_postMessage(channel="C0PUBLIC01", text="status")
    # ...but pinning, ephemeral answers and file shares do.
    calls: list[Callable[[], object]] = [
        lambda: client.pins_add(channel="C0PUBLIC01", timestamp=posted["ts"]),
        lambda: client.chat_postEphemeral(channel="C0PUBLIC01", user="U1", text="only you"),
        lambda: client.files_upload_v2(channel="C0PUBLIC01", content="x", filename="x.txt"),
    ]
    for call in calls:
        with pytest.raises(SlackApiError, match="not_in_channel"):
            call()
    assert client.chat_update(channel="C0PUBLIC01", ts=posted["ts"], text="edited")["ok"]

    without = FakeSlack(scopes=fake.scopes - {"chat:write.public"}).start()
    try:
        without.add_channel("C0PUBLIC01", "general", is_member=False)
        with pytest.raises(SlackApiError, match="not_in_channel"):
            WebClient(token=TOKEN, base_url=without.url).chat_postMessage(channel="C0PUBLIC01", text="x")
    finally:
        without.stop()
    assert fake.violations == []  # Slack's answers about the workspace, not the caller's mistakes


def test_a_private_channel_or_dm_the_bot_is_not_in_is_not_found(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("G0SECRET01", "sec-incidents", is_private=True)
    ts = client.chat_postMessage(channel="G0SECRET01", text="before")["ts"]
    fake.set_membership("G0SECRET01", False)
    fake.add_channel("D0ALICE001", "dm-alice", is_member=False)
    for channel in ["G0SECRET01", "D0ALICE001"]:
        with pytest.raises(SlackApiError, match="channel_not_found"):
            client.chat_postMessage(channel=channel, text="x")
        with pytest.raises(SlackApiError, match="channel_not_found"):
            client.chat_postEphemeral(channel=channel, user="U1", text="x")
    calls: list[Callable[[], object]] = [
        lambda: client.chat_update(channel="G0SECRET01", ts=ts, text="x"),
        lambda: client.pins_add(channel="G0SECRET01", timestamp=ts),
        lambda: client.conversations_info(channel="G0SECRET01"),
    ]
    for call in calls:
        with pytest.raises(SlackApiError, match="channel_not_found"):
            call()
    with pytest.raises(SlackApiError, match="invalid_channel"):
        client.files_upload_v2(channel="G0SECRET01", content="x", filename="x.txt")
    fake.set_membership("G0SECRET01", True)
    assert client.chat_postMessage(channel="G0SECRET01", text="after")["ok"]


def test_an_archived_channel(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("C0OLDINC01", "inc-2023", is_archived=True)
    with pytest.raises(SlackApiError, match="is_archived"):
        client.chat_postMessage(channel="C0OLDINC01", text="x")
    fake.archive_channel("C0OLDINC01", archived=False)
    ts = client.chat_postMessage(channel="C0OLDINC01", text="x")["ts"]
    fake.archive_channel("C0OLDINC01")
    with pytest.raises(SlackApiError, match="is_inactive"):  # chat.update's own word for it
        client.chat_update(channel="C0OLDINC01", ts=ts, text="y")


def test_what_cannot_be_a_channel_is_not_found_and_undeclared_ids_are_joined(fake: FakeSlack) -> None:
    client = WebClient(token=TOKEN, base_url=fake.url)
    for channel in ["#no-such-channel", "incidents", "X0NOTACHAN"]:
        with pytest.raises(SlackApiError, match="channel_not_found"):
            client.chat_postMessage(channel=channel, text="x")
    # An id no test declared: the workspace has it and the bot was invited.
    assert client.chat_postMessage(channel="C0ANYTHING", text="x")["ok"]
    assert fake.channels["C0ANYTHING"]["is_member"] is True
    # A user id is the app's DM with that user.
    assert client.chat_postMessage(channel="U0ALICE001", text="x")["channel"] == "D0ALICE001"
    fake.add_channel("C0INCIDENT", "incidents")
    assert client.chat_postMessage(channel="#incidents", text="x")["channel"] == "C0INCIDENT"
    with FakeSlack(strict_channels=True) as strict, pytest.raises(SlackApiError, match="channel_not_found"):
        WebClient(token=TOKEN, base_url=strict.url).chat_postMessage(channel="C0ANYTHING", text="x")


def test_join_invite_create_archive_change_membership(client: WebClient) -> None:
    with FakeSlack(scopes={"chat:write", "channels:join", "channels:manage"}) as fake:
        slack = WebClient(token=TOKEN, base_url=fake.url)
        fake.add_channel("C0PUBLIC01", "general", is_member=False)
        fake.add_channel("G0SECRET01", "secret", is_private=True, is_member=False)
        with pytest.raises(SlackApiError, match="not_in_channel"):
            slack.conversations_invite(channel="C0PUBLIC01", users="U1")
        assert slack.conversations_join(channel="C0PUBLIC01")["channel"]["is_member"] is True
        assert slack.conversations_invite(channel="C0PUBLIC01", users="U1")["ok"]
        with pytest.raises(SlackApiError, match="method_not_supported_for_channel_type"):
            slack.conversations_join(channel="G0SECRET01")
        created = slack.conversations_create(name="inc-42-checkout")["channel"]
        assert created["is_member"] and slack.chat_postMessage(channel=created["id"], text="x")["ok"]
        with pytest.raises(SlackApiError, match="name_taken"):
            slack.conversations_create(name="inc-42-checkout")
        with pytest.raises(SlackApiError, match="invalid_name_specials"):
            slack.conversations_create(name="Inc 42")
        assert slack.conversations_archive(channel=created["id"])["ok"]
        with pytest.raises(SlackApiError, match="is_archived"):
            slack.chat_postMessage(channel=created["id"], text="x")
        assert fake.violations == []
    # The bot's own app (app.yaml) creates incident channels (channels:manage), never joins one.
    with pytest.raises(SlackApiError, match="missing_scope"):
        client.conversations_join(channel="C0PUBLIC01")


# ---------------------------------------------------------------- rate limits and response_url


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test moves it."""
    return ManualClock()


def test_a_method_past_its_tier_is_answered_429_with_retry_after(clock: ManualClock) -> None:
    with FakeSlack(clock=clock) as fake:
        client = WebClient(token=TOKEN, base_url=fake.url)
        fake.set_usergroup("S0ONCALL", ["U1"])
        for _ in range(20):  # Tier 2: 20 a minute, as a burst
            client.usergroups_users_list(usergroup="S0ONCALL")
        with pytest.raises(SlackApiError) as error:
            client.usergroups_users_list(usergroup="S0ONCALL")
        assert error.value.response.status_code == 429
        assert error.value.response.headers["Retry-After"] == "3"  # one more every 3 s
        assert error.value.response["error"] == "ratelimited"
        clock.advance(3)
        assert client.usergroups_users_list(usergroup="S0ONCALL")["ok"]
        assert fake.violations == []  # a 429 is Slack's answer, not the bot's mistake


def test_chat_post_message_is_limited_per_channel(clock: ManualClock) -> None:
    with FakeSlack(clock=clock) as fake:
        client = WebClient(token=TOKEN, base_url=fake.url)
        for index in range(4):  # a short burst...
            client.chat_postMessage(channel="C0INCIDENT", text=str(index))
        with pytest.raises(SlackApiError) as error:
            client.chat_postMessage(channel="C0INCIDENT", text="5")
        assert error.value.response.headers["Retry-After"] == "1"  # ...then one a second
        assert client.chat_postMessage(channel="C0OTHER001", text="another channel")["ok"]
        clock.advance(1)
        assert client.chat_postMessage(channel="C0INCIDENT", text="5")["ok"]
    with FakeSlack(clock=clock, rate_scale=2) as doubled:
        client = WebClient(token=TOKEN, base_url=doubled.url)
        for index in range(8):
            client.chat_postMessage(channel="C0INCIDENT", text=str(index))
    with FakeSlack(rate_limits=False) as unlimited:
        client = WebClient(token=TOKEN, base_url=unlimited.url)
        for index in range(30):
            client.chat_postMessage(channel="C0INCIDENT", text=str(index))


@pytest.fixture
def fake_sleep(clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make slack_sdk's 429 retry wait on the manual clock instead of for real; list the waits."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    monkeypatch.setattr(builtin_async_handlers, "asyncio", SimpleNamespace(sleep=sleep))
    return waits


async def test_the_bot_retries_slacks_own_429s_and_every_post_arrives_in_order(
    clock: ManualClock, fake_sleep: list[float]
) -> None:
    metrics = BotMetrics()
    with FakeSlack(clock=clock) as fake:
        client = build_client(TOKEN, fake.url, lambda method: metrics.slack_rate_limited.labels(method).inc())
        for index in range(10):
            await client.chat_postMessage(channel="C0INCIDENT", text=f"update {index}")
        assert [m["text"] for m in fake.messages("C0INCIDENT")] == [f"update {i}" for i in range(10)]
        refused = [call for call in fake.calls_to("chat.postMessage") if call.status == 429]
        assert refused and len(fake_sleep) == len(refused)
        assert metrics.slack_rate_limited.labels("chat.postMessage")._value.get() == len(refused)
        assert fake.violations == []


async def test_the_bots_pacer_stays_within_slacks_limit(clock: ManualClock) -> None:
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    pacer = ChannelPacer(clock=clock, sleep=sleep)
    with FakeSlack(clock=clock) as fake:
        client = AsyncWebClient(token=TOKEN, base_url=fake.url)
        for index in range(10):
            await pacer.wait_turn("C0INCIDENT")
            await client.chat_postMessage(channel="C0INCIDENT", text=f"update {index}")
        assert {call.status for call in fake.calls_to("chat.postMessage")} == {200}


async def test_a_response_url_takes_five_posts_in_thirty_minutes(clock: ManualClock) -> None:
    with FakeSlack(clock=clock) as fake:
        used = AsyncWebhookClient(fake.response_url("cmd-1"))
        for index in range(5):
            assert (await used.send(text=f"answer {index}")).status_code == 200
        sixth = await used.send(text="a sixth")
        assert (sixth.status_code, sixth.body) == (404, "used_url")

        late = AsyncWebhookClient(fake.response_url("cmd-2"))
        clock.advance(30 * 60 + 1)
        expired = await late.send(text="too late")
        assert (expired.status_code, expired.body) == (404, "expired_url")
        assert [post.body["text"] for post in fake.response_posts] == [f"answer {i}" for i in range(5)]
        assert [(v.method, v.error) for v in fake.violations] == [
            ("response_url", "used_url"),
            ("response_url", "expired_url"),
        ]
