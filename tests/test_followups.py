"""Follow-ups: recorded during or after an incident, filed with its RCA as GitHub issues of their own
(labelled, linked back to the RCA issue), listed with their state in the RCA; filing again updates,
never duplicates (real PostgreSQL; GitHub's fake checks every call against GitHub's description)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.followup_store import FollowupStore
from adapters.github import GitHubAdapter
from adapters.incident_store import Incident, IncidentStore
from bot.render.rca import FILE_ACTION
from bot.services import Services
from bot.state import migrate
from commands import incident, rca
from commands.base import UsageError
from commands.followups import FollowupFiling
from tests.conftest import make_settings, recreate_database
from tests.fakes import FakeSlack
from tests.fakes.github import TOKEN, FakeGitHub
from tests.incident_helpers import OTHER_USER, USER, incident_bot

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
ENVIRONMENT = "test"
NAMES = {USER: "Oncall Person", OTHER_USER: "Alice Example"}


@dataclass
class World:
    store: IncidentStore
    followups: FollowupStore
    github: FakeGitHub
    tracker: GitHubAdapter
    incident: Incident

    async def add(self, text: str, owner: str | None = None) -> None:
        words = f"inc={self.incident.id} followup {text}" + (f" owner={owner}" if owner else "")
        result = await incident.run(
            self.store,
            incident.parse([words]),
            actor=USER,
            channel_id=None,
            contacts=[],
            followups=self.followups,
        )
        assert result.outcome == "followup" and result.followup is not None

    async def draft(self) -> None:
        await rca.draft(
            self.store,
            self.incident,
            language="en",
            templates_dir=TEMPLATES,
            environment=ENVIRONMENT,
            actor=USER,
            names=NAMES,
            latest_backup_at=None,
            followups=await self.followups.of(self.incident.id),
        )

    async def file(self, force: bool = False) -> rca.RcaResult:
        filing = FollowupFiling(store=self.followups, labels=["follow-up", "from-rca"], names=NAMES)
        return await rca.file(
            self.store,
            self.tracker,
            self.incident,
            environment=ENVIRONMENT,
            actor=USER,
            force=force,
            followups=filing,
        )

    def posts(self) -> int:
        return len(self.github.calls_to("issues/create"))


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake
        assert fake.violations == [], fake.violations


@pytest.fixture
async def world(github: FakeGitHub, postgres: str) -> AsyncIterator[World]:
    dsn = await recreate_database("chatops_test_followups")
    services = Services.build(make_settings(state_database_url=dsn))
    await migrate(services.state_db)
    store = IncidentStore(services.state_db)
    started = datetime.now(UTC) - timedelta(hours=2)
    declared = await incident.declare(
        store,
        channel_id="C0FOLLOW01",
        title="Checkout returns 5xx",
        severity="P2",
        actor=USER,
        force=False,
        contacts=[],
        now=started,
    )
    assert declared.incident is not None
    tracker = GitHubAdapter(github.url, github.repo, TOKEN, timeout=2.0)
    try:
        yield World(store, FollowupStore(services.state_db), github, tracker, declared.incident)
    finally:
        await tracker.aclose()
        await services.aclose()


def rca_issue(github: FakeGitHub) -> dict[str, object]:
    return next(issue for issue in github.issues.values() if str(issue["title"]).startswith("RCA "))


async def test_filing_the_rca_files_each_followup_as_its_own_linked_issue(world: World) -> None:
    await world.add("add post-deploy smoke tests", owner=OTHER_USER)
    await world.add("check migrations in CI")
    await world.draft()
    result = await world.file()
    main = rca_issue(world.github)
    followups = [issue for number, issue in world.github.issues.items() if issue is not main]
    assert result.outcome == "filed" and len(world.github.issues) == 3
    assert [issue["title"] for issue in followups] == [
        "INC-1 follow-up: add post-deploy smoke tests",
        "INC-1 follow-up: check migrations in CI",
    ]
    for issue in followups:
        assert [label["name"] for label in issue["labels"]] == ["follow-up", "from-rca"]  # type: ignore[index]
        assert f"RCA: {main['html_url']}" in str(issue["body"])
        assert "<!-- chatops-followup environment=test incident=1 id=" in str(issue["body"])
    assert "**Owner:** Alice Example" in str(followups[0]["body"])  # a name, never a GitHub mention
    # The RCA lists them, with their issue and its state.
    body = str(main["body"])
    assert (
        f"- [ ] add post-deploy smoke tests — owner Alice Example · [#2]({followups[0]['html_url']}) (open)"
        in body
    )
    assert "- [ ] check migrations in CI · [#3]" in body
    stored = await world.store.draft(world.incident.id)
    assert stored is not None and stored.body == body and stored.filed_body_sha256 == rca.body_digest(body)
    assert [item.issue_number for item in result.followups] == [2, 3] and result.followup_problems == []


async def test_filing_again_updates_never_duplicates_and_shows_their_state(world: World) -> None:
    await world.add("add post-deploy smoke tests")
    await world.draft()
    await world.file()
    world.github.issues[2]["state"] = "closed"  # done, on GitHub
    await world.add("page the DBA earlier")  # one more, after the first filing
    await world.draft()
    result = await world.file()
    body = str(rca_issue(world.github)["body"])
    assert world.posts() == 3 and sorted(world.github.issues) == [1, 2, 3]  # RCA, then one issue each
    assert "- [x] add post-deploy smoke tests · [#2]" in body and "(closed)" in body
    assert "- [ ] page the DBA earlier · [#3]" in body
    assert [item.issue_state for item in result.followups] == ["closed", "open"]
    # Nothing changed since: a third filing creates nothing and rewrites nothing of the follow-ups.
    patched = len(world.github.calls_to("issues/update"))
    await world.file()
    assert world.posts() == 3 and len(world.github.calls_to("issues/update")) == patched + 1  # the RCA only


async def test_a_lost_answer_never_makes_a_second_followup_issue(world: World) -> None:
    await world.draft()
    await world.file()  # the RCA alone
    await world.add("add post-deploy smoke tests")
    world.github.lose_answer(method="POST")  # GitHub opens the issue, the answer is lost
    lost = await world.file()
    assert lost.outcome == "updated" and "follow-up 1" in lost.followup_problems[0]
    again = await world.file()
    assert again.followup_problems == [] and again.followups[0].issue_number == 2
    assert sorted(world.github.issues) == [1, 2]


async def test_a_followup_edited_on_github_is_left_as_it_is(world: World) -> None:
    await world.add("add post-deploy smoke tests")
    await world.draft()
    await world.file()
    world.github.edit_on_github(2, "Rewritten by the team: smoke tests for checkout and login")
    await world.file()
    assert world.github.issues[2]["body"] == "Rewritten by the team: smoke tests for checkout and login"
    await world.file(force=True)
    assert "RCA: " in str(world.github.issues[2]["body"])


async def test_followups_come_during_or_after_and_need_text(world: World) -> None:
    await world.add("during")
    resolve = incident.parse([f"inc={world.incident.id} resolve fixed"])
    await incident.run(world.store, resolve, actor=USER, channel_id=None, contacts=[])
    await world.add("after it was resolved")
    events = await world.store.events(world.incident.id)
    assert [(event.kind, event.text) for event in events if event.kind == "followup"] == [
        ("followup", "Follow-up: during"),
        ("followup", "Follow-up: after it was resolved"),
    ]
    with pytest.raises(UsageError, match="followup needs text"):
        incident.parse(["followup owner=@alice"])
    with pytest.raises(UsageError, match="`owner=@alice` does not go with note"):
        incident.parse(["note ask owner=@alice"])


@pytest.mark.usefixtures("postgres")
async def test_followups_in_slack_then_filed_with_the_button(
    fake_slack: FakeSlack, github: FakeGitHub
) -> None:
    fake_slack.add_user(USER, "oncall", real_name="Oncall Person")
    fake_slack.add_user(OTHER_USER, "alice", real_name="Alice Example")
    async with incident_bot(fake_slack, github, database="chatops_test_followups_slack") as bot:
        await bot.answer(await bot.command("/incident", "declare Checkout returns 5xx sev=P2"))
        added = await bot.answer(await bot.command("/incident", "followup add smoke tests owner=@alice"))
        await bot.command("/incident", "followup page nobody owner=@bob")
        unknown = await fake_slack.wait_for_call_async("chat.postEphemeral")
        await bot.answer(await bot.command("/incident", "resolve rolled back"))
        await bot.answer(await bot.command("/rca", ""))
        await bot.click(FILE_ACTION, "1")
        filed = await fake_slack.wait_for_call_async(
            "chat.postEphemeral", lambda call: "Filed as" in str(call.params.get("text"))
        )
        timeline = await bot.store.events(1)
    assert "Follow-up added to INC-1" in added
    assert "there is no Slack user called @bob" in str(unknown.params["text"])
    assert "Follow-ups filed as their own issues: #2." in str(filed.params["text"])
    assert [event.details.get("owner") for event in timeline if event.kind == "followup"] == [OTHER_USER]
    assert "- [ ] add smoke tests — owner alice · [#2]" in str(github.issues[1]["body"])
    assert github.issues[2]["title"] == "INC-1 follow-up: add smoke tests"
