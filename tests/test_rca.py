"""RCA drafts: rendered from the runbook's template, kept until filed, filed once as a GitHub issue."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus, urlsplit

import httpx
import pytest

from adapters.github import GitHubAdapter
from adapters.incident_store import Incident, IncidentStore, RcaDraft
from bot.render.rca import FILE_ACTION
from bot.runners import graph as graph_runner
from bot.runners import rca as rca_runner
from bot.services import Services
from bot.state import migrate
from commands import incident, rca
from commands.base import UsageError
from tests.conftest import make_settings, recreate_database
from tests.fakes import FakeSlack
from tests.fakes.github import TOKEN, FakeGitHub
from tests.incident_helpers import CHANNEL, OTHER_USER, USER, block_text, in_thread, incident_bot, is_header

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
ENVIRONMENT = "test"
NAMES = {USER: "Oncall Person", OTHER_USER: "Alice Example"}


@dataclass
class World:
    """A state database with one resolved incident and its timeline, and GitHub's fake."""

    store: IncidentStore
    services: Services
    github: FakeGitHub
    tracker: GitHubAdapter
    incident: Incident
    waits: list[float] = field(default_factory=list)

    async def draft(
        self, language: str = "en", backup: datetime | None = None, graphs: list[rca.GraphLink] | None = None
    ) -> RcaDraft:
        return await rca.draft(
            self.store,
            self.incident,
            language=language,
            templates_dir=TEMPLATES,
            environment=ENVIRONMENT,
            actor=USER,
            names=NAMES,
            latest_backup_at=backup,
            now=self.incident.resolved_at,
            graphs=graphs,
        )

    def prometheus_links(self) -> list[rca.GraphLink]:
        """The live Prometheus graphs of the incident's window, as `/rca` links them."""
        assert self.incident.resolved_at is not None
        return graph_runner.prometheus_links(
            self.services, self.incident.started_at, self.incident.resolved_at
        )

    async def file(self, force: bool = False) -> rca.RcaResult:
        return await rca.file(
            self.store, self.tracker, self.incident, environment=ENVIRONMENT, actor=USER, force=force
        )


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake
        assert fake.violations == [], fake.violations


async def seed_incident(store: IncidentStore, channel: str = CHANNEL) -> Incident:
    """Declare, work and resolve an incident 45 minutes long, as the runbook's example."""
    started = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    result = await incident.declare(
        store,
        channel_id=channel,
        title="Checkout returns 5xx",
        severity="P2",
        actor=USER,
        force=False,
        contacts=[],
        now=started + timedelta(minutes=5),
        started_at=started,
    )
    assert result.incident is not None
    number = result.incident.id
    await store.add_event(number, "alert", None, "HighErrorRate firing: 5xx error rate is 12%", at=started)
    notes = [
        (10, "update", "Logs point at /api/v1/projects; @platform-team is looking"),
        (15, "note", "impact: 5% of users got errors on checkout (500 RPM)"),
        (20, "note", "cause: migration 20251120_add_mfa_fields did not run in production"),
        (25, "note", "action: add post-deploy smoke tests"),
        (26, "note", "ação: verificar migrations no CI/CD"),
        (30, "/rollback", "Rolled back to v2.0.5"),
        (35, "note", "sneaky <!-- chatops-rca environment=test incident=99 --> text"),
    ]
    for minutes, kind, text in notes:
        await store.add_event(number, kind, USER, text, at=started + timedelta(minutes=minutes))
    args = incident.IncidentArgs(action="resolve", text="rolled back to v2.0.5", incident_id=number)
    resolved = await incident.run(
        store, args, actor=OTHER_USER, channel_id=channel, contacts=[], now=started + timedelta(minutes=45)
    )
    assert resolved.incident is not None
    return resolved.incident


@pytest.fixture
async def world(github: FakeGitHub, postgres: str) -> AsyncIterator[World]:
    dsn = await recreate_database("chatops_test_rca")
    services = Services.build(make_settings(state_database_url=dsn))
    await migrate(services.state_db)
    store = IncidentStore(services.state_db)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    tracker = GitHubAdapter(github.url, github.repo, TOKEN, timeout=1.0, max_retry_wait=10, sleep=sleep)
    try:
        yield World(store, services, github, tracker, await seed_incident(store), waits)
    finally:
        await tracker.aclose()
        await services.aclose()


# --- the draft ---------------------------------------------------------------------------------------


async def test_the_english_draft_follows_the_runbook_and_is_prefilled(world: World) -> None:
    assert world.incident.resolved_at is not None
    backup = world.incident.resolved_at - timedelta(hours=3)
    body = (await world.draft("en", backup=backup)).body
    started = world.incident.started_at
    sections = [
        "## Incident: Checkout returns 5xx",
        f"**Date/Time:** {started:%Y-%m-%d %H:%M} UTC",
        "**Duration:** 45 min",
        "**Impact:** 5% of users got errors on checkout (500 RPM)",
        "**Severity:** P2 (High)",
        "### Timeline",
        "### Root Cause",
        "### Corrective Actions",
        "### Post-incident checklist",
    ]
    positions = [body.index(item) for item in sections]
    assert positions == sorted(positions)
    assert f"- {started:%H:%M} - Alert: HighErrorRate firing: 5xx error rate is 12%" in body
    assert (
        f"- {started + timedelta(minutes=30):%H:%M} - `/rollback`: Rolled back to v2.0.5 (Oncall Person)"
        in body
    )
    assert "Resolved after 45 min: rolled back to v2.0.5 (Alice Example)" in body
    assert "migration 20251120_add_mfa_fields did not run in production" in body.split("### Root Cause")[1]
    assert "1. add post-deploy smoke tests\n2. verificar migrations no CI/CD" in body
    for item in ("Update the runbook", "Improve alerts", "Review backups", "Communication"):
        assert f"- [ ] **{item}**" in body
    assert "the latest backup is 3 h 00 min old" in body
    assert "commander Oncall Person" in body  # names, not Slack ids
    assert "@\u200bplatform-team" in body  # no GitHub notification for whoever has that login
    assert body.count("<!-- chatops-rca") == 1 and body.rstrip().endswith(
        f"<!-- chatops-rca environment={ENVIRONMENT} incident={world.incident.id} -->"
    )


async def test_the_portuguese_draft_is_the_runbooks_template(world: World) -> None:
    body = (await world.draft("pt")).body
    for line in (
        "## Incidente: Checkout returns 5xx",
        "**Data/Hora:**",
        "**Duração:** 45 min",
        "**Impacto:** 5% of users",
        "**Severidade:** P2 (Alta)",
        "### Timeline",
        "### Root Cause",
        "### Ações Corretivas",
        "### Checklist Pós-Incidente",
        "- [ ] **Revisar Backups**: a idade do último backup é desconhecida",
        "- [ ] **Comunicação**",
    ):
        assert line in body, line


# A placeholder left unfilled: `$window` (PromQL), `${name}`, or a Jinja expression that was not rendered.
_PLACEHOLDER = re.compile(r"\$\{?[A-Za-z_]|\{\{|\{%")


def link_expressions(body: str) -> list[str]:
    """Return the PromQL of every Prometheus graph link of a draft (its `g0.expr`)."""
    urls = re.findall(r"\]\((https?://[^)\s]+)\)", body)
    return [expr for url in urls for expr in parse_qs(urlsplit(url).query).get("g0.expr", [])]


@pytest.mark.parametrize("language", rca.LANGUAGES)
async def test_no_rendered_draft_carries_a_placeholder(world: World, language: str) -> None:
    body = (await world.draft(language, graphs=world.prometheus_links())).body
    assert len(link_expressions(body)) == 2
    for text in (body, unquote_plus(body)):  # the links' queries are URL-encoded
        assert "$window" not in text and "{{" not in text
        assert _PLACEHOLDER.search(text) is None, _PLACEHOLDER.search(text)


async def test_the_drafts_prometheus_links_are_queries_prometheus_accepts(
    sandbox: object, world: World
) -> None:
    body = (await world.draft(graphs=world.prometheus_links())).body
    expressions = link_expressions(body)
    assert len(expressions) == 2
    prometheus = world.services.settings.prometheus_url.rstrip("/")
    async with httpx.AsyncClient(timeout=10) as client:
        for expr in expressions:
            assert "$" not in expr, expr
            answer = await client.get(f"{prometheus}/api/v1/query", params={"query": expr})
            assert answer.json()["status"] == "success", (expr, answer.text)
            assert answer.status_code == 200


async def test_a_broken_template_is_a_clear_error_and_the_draft_is_kept(world: World, tmp_path: Path) -> None:
    kept = await world.draft("en")
    (tmp_path / "rca.en.md.j2").write_text(
        "## {{ incident.title }}\n\n{% for x in timeline %}\n- {{ x.time }\n"
    )
    (tmp_path / "rca.pt.md.j2").write_text("## {{ incident.titulo }}\n")
    with pytest.raises(UsageError, match=r"rca.en.md.j2 is broken at line 4: .*nothing was saved"):
        await rca.draft(
            world.store,
            world.incident,
            language="en",
            templates_dir=tmp_path,
            environment=ENVIRONMENT,
            actor=USER,
            names={},
            latest_backup_at=None,
        )
    with pytest.raises(UsageError, match=r"rca.pt.md.j2 failed: UndefinedError"):
        await rca.draft(
            world.store,
            world.incident,
            language="pt",
            templates_dir=tmp_path,
            environment=ENVIRONMENT,
            actor=USER,
            names={},
            latest_backup_at=None,
        )
    assert await world.store.draft(world.incident.id) == kept


def test_templates_are_found_from_a_checkout_the_working_directory_or_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    assert rca_runner.templates_dir(settings) == TEMPLATES  # beside the code (checkout, editable install)
    monkeypatch.setattr(rca_runner, "_PACKAGE_ROOT", tmp_path / "site-packages")
    app = tmp_path / "app"
    (app / "templates").mkdir(parents=True)
    (app / "templates" / "rca.en.md.j2").write_text("x")
    monkeypatch.chdir(app)  # the Docker image: WORKDIR /app, templates copied beside
    assert rca_runner.templates_dir(settings) == app / "templates"
    assert rca_runner.templates_dir(make_settings(templates_dir=TEMPLATES)) == TEMPLATES
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    with pytest.raises(UsageError, match="set CHATOPS_TEMPLATES_DIR"):
        rca_runner.templates_dir(settings)


def test_the_package_ships_the_templates() -> None:
    # A regular install (not editable, as the Dockerfile's `pip install .`) puts them under
    # <prefix>/share/chatops/templates, the last place templates_dir() looks.
    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = {Path(item).name for item in data_files["share/chatops/templates"]}
    assert (
        shipped == {path.name for path in TEMPLATES.glob("rca.*.md.j2")} == {"rca.en.md.j2", "rca.pt.md.j2"}
    )


async def test_the_latest_backup_comes_from_the_store_or_an_injected_finder(tmp_path: Path) -> None:
    (tmp_path / "2026-11-20_02-00-00").mkdir()
    (tmp_path / "2026-11-20_02-00-00" / "manifest.json").write_text("{}")
    (tmp_path / "2026-11-21_02-00-00").mkdir()  # incomplete: no manifest
    services = Services.build(make_settings(backup_store=str(tmp_path)))
    injected = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)

    async def finder() -> datetime:
        return injected

    async def broken() -> datetime:
        raise ConnectionError("store down")

    try:
        assert await rca_runner.latest_backup_at(services) == datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
        services.extra[rca_runner.LATEST_BACKUP] = finder
        assert await rca_runner.latest_backup_at(services) == injected
        services.extra[rca_runner.LATEST_BACKUP] = broken
        assert await rca_runner.latest_backup_at(services) is None
    finally:
        await services.aclose()


# --- filing ------------------------------------------------------------------------------------------


async def test_filing_creates_the_issue_once_and_then_updates_it(world: World) -> None:
    await world.draft("en")
    first = await world.file()
    await world.draft("pt")
    second = await world.file()
    events = await world.store.events(world.incident.id)
    assert first.outcome == "filed" and second.outcome == "updated"
    assert first.draft.issue_number == second.draft.issue_number == 1
    assert list(world.github.issues) == [1]
    issue = world.github.issues[1]
    assert issue["title"] == "RCA INC-1: Checkout returns 5xx"
    assert [label["name"] for label in issue["labels"]] == ["incident", "severity:P2"]
    assert issue["body"].startswith("## Incidente:")  # the second filing replaced the body
    assert [call.method for call in world.github.calls] == ["POST", "GET", "PATCH"]
    assert [event.text for event in events if event.kind == "rca"] == [
        "RCA filed as GitHub issue #1",
        "RCA updated in GitHub issue #1",
    ]


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "the token was refused (401): check GITHUB_TOKEN: Bad credentials"),
        (403, "may not write issues in that repository (403): Resource not accessible"),
        (404, "not found (404): check CHATOPS_GITHUB_REPO"),
        (410, "issues are disabled in that repository, or the issue was deleted (410)"),
        (422, "GitHub rejected the issue (422): Validation Failed: body is too long"),
    ],
)
async def test_a_refusal_is_explained_and_nothing_is_half_written(
    world: World, status: int, hint: str
) -> None:
    kept = await world.draft("en")
    world.github.fail(status, method="POST")
    result = await world.file()
    stored = await world.store.draft(world.incident.id)
    assert result.outcome == "not_filed" and not result.ok
    assert hint in (result.filing_error or "")
    assert "Nothing was filed; the draft is kept" in (result.filing_error or "")
    assert world.github.issues == {}
    assert stored is not None and stored.body == kept.body
    assert stored.issue_number is None and stored.create_attempted_at is None
    assert stored.last_error == result.filing_error
    # Once GitHub accepts, the same draft is filed.
    assert (await world.file()).outcome == "filed"


@pytest.mark.parametrize("status", [403, 429])
async def test_a_short_secondary_rate_limit_is_waited_out(world: World, status: int) -> None:
    await world.draft("en")
    world.github.fail(status, kind="secondary", retry_after=3, method="POST")
    result = await world.file()
    assert result.outcome == "filed"
    assert world.waits == [3.0]
    assert len(world.github.calls_to("issues/create")) == 2 and list(world.github.issues) == [1]


@pytest.mark.parametrize(
    ("status", "kind"),
    [(403, "secondary"), (429, "secondary"), (403, "primary")],
    ids=["403", "429", "hourly"],
)
async def test_a_long_rate_limit_is_reported_with_its_wait(world: World, status: int, kind: str) -> None:
    await world.draft("en")
    world.github.fail(status, kind=kind, retry_after=120, method="POST")  # type: ignore[arg-type]
    result = await world.file()
    assert result.outcome == "not_filed"
    assert "GitHub is rate-limiting the bot; it asked to wait for about 1" in (result.filing_error or "")
    assert result.retry_after_seconds is not None and 100 <= result.retry_after_seconds <= 120
    assert world.waits == [] and world.github.issues == {}


async def test_a_secondary_limit_without_retry_after_means_a_minute(world: World) -> None:
    await world.draft("en")
    world.github.fail(403, kind="secondary", method="POST")
    result = await world.file()
    assert result.outcome == "not_filed" and result.retry_after_seconds == 60


async def test_a_lost_answer_never_makes_a_second_issue(world: World) -> None:
    await world.draft("en")
    world.github.lose_answer(method="POST")
    lost = await world.file()
    attempted = await world.store.draft(world.incident.id)
    again = await world.file()
    assert lost.outcome == "not_filed" and "may or may not exist" in (lost.filing_error or "")
    assert attempted is not None and attempted.create_attempted_at is not None
    assert again.outcome == "updated" and again.draft.issue_number == 1
    assert list(world.github.issues) == [1]
    assert len(world.github.calls_to("issues/create")) == 1


async def test_a_timeout_never_makes_a_second_issue(world: World) -> None:
    await world.draft("en")
    world.github.hang(2.0, method="POST")
    timed_out = await world.file()
    await asyncio.sleep(1.5)  # GitHub (the fake) finishes the create after the bot gave up
    again = await world.file()
    assert timed_out.outcome == "not_filed" and "GitHub did not confirm" in (timed_out.filing_error or "")
    assert again.outcome == "updated" and list(world.github.issues) == [1]


async def test_edits_made_on_github_are_not_overwritten_without_force(world: World) -> None:
    await world.draft("en")
    await world.file()
    world.github.edit_on_github(1, "The team rewrote this RCA by hand.")
    await world.draft("en")
    refused = await world.file()
    forced = await world.file(force=True)
    assert refused.outcome == "not_filed" and "was edited on GitHub since it was filed" in (
        refused.filing_error or ""
    )
    assert forced.outcome == "updated"
    assert world.github.issues[1]["body"].startswith("## Incident:")


async def test_two_people_filing_at_once_make_one_issue(world: World) -> None:
    await world.draft("en")
    world.github.hang(0.5, method="POST")
    outcomes = await asyncio.gather(world.file(), world.file(), return_exceptions=True)
    busy = [item for item in outcomes if isinstance(item, UsageError)]
    filed = [item for item in outcomes if isinstance(item, rca.RcaResult)]
    assert len(busy) == 1 and "being filed by someone else" in busy[0].message
    assert len(filed) == 1 and filed[0].outcome == "filed"
    assert list(world.github.issues) == [1]


async def test_without_github_configured_the_draft_is_kept(world: World) -> None:
    await world.draft("en")
    with pytest.raises(UsageError, match="GitHub is not configured"):
        await rca.file(world.store, None, world.incident, environment=ENVIRONMENT, actor=USER)
    assert await world.store.draft(world.incident.id) is not None


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([], {}),
        (["12"], {"incident_id": 12}),
        (["INC-12", "file"], {"incident_id": 12, "file": True}),
        (["--preview", "#3", "lang=PT"], {"incident_id": 3, "preview_only": True, "language": "pt"}),
        (["file", "force=yes"], {"file": True, "force": True}),
    ],
)
def test_grammar(tokens: list[str], expected: dict[str, object]) -> None:
    parsed = rca.parse(tokens).model_dump()
    assert {key: parsed[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["lang=fr"], "`fr` is not a template language"),
        (["1", "2"], "unexpected argument `2`"),
        (["file", "--preview"], "choose one"),
    ],
)
def test_bad_grammar(tokens: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        rca.parse(tokens)


# --- Slack and the terminal --------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres")
async def test_preview_in_the_thread_then_file_with_the_button(
    fake_slack: FakeSlack, github: FakeGitHub
) -> None:
    async with incident_bot(fake_slack, github) as bot:
        await bot.answer(await bot.command("/incident", "declare Checkout returns 5xx sev=P2"))
        header = await bot.posted(is_header)
        thread = str(header.response["ts"])  # type: ignore[index]
        await bot.answer(await bot.command("/incident", "note cause: a migration did not run"))
        await bot.answer(await bot.command("/incident", "resolve rolled back"))
        answer = await bot.answer(await bot.command("/rca", ""))
        preview = await bot.posted(lambda call: str(call.params.get("text")).startswith("RCA draft"))
        buttons = [block for block in preview.params["blocks"] if block["type"] == "actions"]
        await bot.click(FILE_ACTION, buttons[0]["elements"][0]["value"])
        filed = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=10)
        edited = await fake_slack.wait_for_call_async(
            "chat.update",
            lambda call: call.params.get("ts") == preview.response["ts"],  # type: ignore[index]
        )
        again = await bot.answer(await bot.command("/rca", "1 file"))
    assert "RCA draft for INC-1 posted in its thread" in answer
    assert in_thread(thread)(preview)
    text = block_text(preview.params["blocks"])
    assert "*Incident: Checkout returns 5xx*" in text and "a migration did not run" in text
    assert "not filed yet" in text and "chatops-rca" not in text
    assert "Filed as <https://github.com/acme/3dpot/issues/1|GitHub issue #1>" in filed.params["text"]
    assert "Update GitHub issue #1" in block_text(edited.params["blocks"])
    assert "filed as <https://github.com/acme/3dpot/issues/1|#1>" in block_text(edited.params["blocks"])
    assert "Updated <https://github.com/acme/3dpot/issues/1|GitHub issue #1>" in again
    assert list(github.issues) == [1]
    assert fake_slack.violations == []


@pytest.mark.usefixtures("postgres")
async def test_a_refusal_from_the_button_tells_the_clicker(fake_slack: FakeSlack, github: FakeGitHub) -> None:
    async with incident_bot(fake_slack, github) as bot:
        await bot.answer(await bot.command("/incident", "declare Disk full"))
        await bot.answer(await bot.command("/rca", ""))
        github.fail(403, method="POST")
        await bot.click(FILE_ACTION, "1")
        refusal = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=10)
        stored = await bot.store.draft(1)
    assert "may not write issues in that repository (403)" in refusal.params["text"]
    assert "the draft is kept" in refusal.params["text"]
    assert stored is not None and stored.issue_number is None


@pytest.mark.usefixtures("postgres")
async def test_rca_of_an_unknown_incident(fake_slack: FakeSlack) -> None:
    async with incident_bot(fake_slack) as bot:
        await bot.command("/rca", "42")
        reply = await fake_slack.wait_for_call_async("chat.postEphemeral", timeout=10)
    assert "there is no incident INC-42" in reply.params["text"]


@pytest.mark.usefixtures("postgres")
def test_the_terminal_previews_without_posting(fake_slack: FakeSlack) -> None:
    async def seed() -> str:
        dsn = await recreate_database("chatops_test_rca_cli")
        services = Services.build(make_settings(state_database_url=dsn))
        try:
            await migrate(services.state_db)
            await seed_incident(IncidentStore(services.state_db))
        finally:
            await services.aclose()
        return dsn

    env = {
        **os.environ,
        "CHATOPS_STATE_DATABASE_URL": asyncio.run(seed()),
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "CHATOPS_SLACK_API_URL": fake_slack.url,
        "CHATOPS_RCA_LANGUAGE": "pt",
    }
    chatops = str(REPO / ".venv" / "bin" / "chatops")
    shown = subprocess.run(
        [chatops, "rca", "1", "--preview"], env=env, capture_output=True, text=True, timeout=60, cwd="/tmp"
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("## Incidente: Checkout returns 5xx")
    assert "**Duração:** 45 min" in shown.stdout
    assert fake_slack.calls_to("chat.postMessage") == []


async def test_the_draft_links_the_graph_of_the_whole_incident_window(
    sandbox: object, fake_slack: FakeSlack, github: FakeGitHub
) -> None:
    async with incident_bot(fake_slack, github) as bot:
        await bot.answer(await bot.command("/incident", "declare Checkout returns 5xx sev=P2"))
        header = await bot.posted(is_header)
        thread = str(header.response["ts"])  # type: ignore[index]
        await bot.answer(await bot.command("/incident", "resolve rolled back"))
        await bot.answer(await bot.command("/rca", ""))
        uploaded = await fake_slack.wait_for_call_async("files.completeUploadExternal", timeout=30)
        await bot.answer(await bot.command("/rca", "1 file"))
    # The picture of the incident's window went into the incident's thread...
    assert uploaded.params["thread_ts"] == thread
    [picture] = fake_slack.files.values()
    assert picture.content.startswith(b"\x89PNG")
    # ...and the filed issue links it, with Prometheus's live graphs of the same window.
    [issue] = github.issues.values()
    body = issue["body"]
    assert "### Graphs" in body
    assert f"slack.com/files/{fake_slack.bot_user_id}/{picture.id}" in body
    assert body.count("/graph?g0.expr=") == 2
    assert "g0.range_input=" in body and "g0.end_input=" in body
