"""/triage in Slack: summary in the channel, evidence and the key-metrics picture in its thread."""

from __future__ import annotations

from sandbox.manager import SandboxStatus
from tests.fakes import FakeSlack
from tests.test_slack_app import CHANNEL, block_text, post_command, running_bot


async def test_triage_posts_a_summary_then_evidence_and_a_graph_in_its_thread(
    sandbox: SandboxStatus, fake_slack: FakeSlack
) -> None:
    async with running_bot(fake_slack) as (url, _):
        assert (await post_command(url, "/triage")).status_code == 200
        completed = await fake_slack.wait_for_call_async("files.completeUploadExternal", timeout=60)
    posts = fake_slack.calls_to("chat.postMessage")
    summary = posts[0]
    assert summary.params["channel"] == CHANNEL and "thread_ts" not in summary.params
    assert "Triage" in block_text(summary.params["blocks"])
    summary_ts = summary.response["ts"]
    evidence = posts[1:]
    assert evidence and all(call.params["thread_ts"] == summary_ts for call in evidence)
    assert completed.params["thread_ts"] == summary_ts
    [picture] = fake_slack.files.values()
    assert picture.content.startswith(b"\x89PNG")
    assert picture.filename.endswith(".png")
    assert "5xx" in str(completed.params["files"]) or "P95" in str(completed.params["files"])
