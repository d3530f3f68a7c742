"""`/rca`: the root-cause analysis draft of an incident, rendered from a template, filed as a GitHub issue.

The draft is pre-filled from the incident record and its timeline; notes that start with `impact:`,
`cause:` or `action:` (or impacto:, causa:, ação:) fill those sections. It is kept in the bot's
database until filed, and after: filing again updates the same issue.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import Field

from adapters.followup_store import Followup
from adapters.github import GitHubError
from adapters.incident_store import FilingBusy, Incident, IncidentStore, RcaDraft, TimelineEvent
from commands import followups as followup_filing
from commands.base import Arguments, CommandResult, Model, UsageError
from commands.followups import FollowupFiling
from commands.incident import format_minutes, incident_duration, parse_incident_ref
from commands.issues import IssueTracker, body_digest, markdown_text, person_name

__all__ = ["IssueTracker", "body_digest", "markdown_text", "person_name"]

USAGE = "/rca [incident] [lang=en|pt] [file] [force=yes]   (terminal: chatops rca [incident] --preview)"
LANGUAGES = ("en", "pt")
LABEL = "incident"
# How far before a create attempt to look for the issue it may have opened.
_FIND_SLACK = timedelta(minutes=10)

_PREFIXES: dict[str, tuple[str, ...]] = {
    "impact": ("impact:", "impacto:"),
    "cause": ("root cause:", "cause:", "causa raiz:", "causa:"),
    "action": ("corrective action:", "action:", "fix:", "ação corretiva:", "ação:", "acao:"),
}

Outcome = Literal["drafted", "filed", "updated", "not_filed"]


class RcaArgs(Model):
    """What `/rca` was asked for."""

    incident_id: int | None = None
    language: str | None = None
    file: bool = False
    preview_only: bool = False
    force: bool = False


class RcaResult(CommandResult):
    """The draft as stored, and what filing did (or why it did not)."""

    outcome: Outcome
    incident: Incident
    draft: RcaDraft
    filing_error: str | None = None
    retry_after_seconds: float | None = None
    preview_only: bool = False
    slack_problems: list[str] = Field(default_factory=list)
    # The incident's follow-ups as filed with it, and what went wrong filing them.
    followups: list[Followup] = Field(default_factory=list)
    followup_problems: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Return whether what was asked happened."""
        return self.outcome != "not_filed"


def parse(tokens: list[str]) -> RcaArgs:
    """Read `[incident] [lang=..] [file] [force=yes] [--preview]`."""
    arguments = Arguments.parse(tokens, USAGE)
    args = RcaArgs()
    args.language = arguments.option("lang", _language, None)
    args.force = arguments.option("force", _yes, False)
    for word in list(arguments.positionals):
        lowered = word.lower()
        if lowered in ("file", "--file"):
            args.file = True
        elif lowered in ("preview", "--preview"):
            args.preview_only = True
        elif args.incident_id is None:
            args.incident_id = parse_incident_ref(word)
        else:
            continue
        arguments.positionals.remove(word)
    arguments.done()
    if args.file and args.preview_only:
        raise UsageError("choose one: file it, or --preview it", USAGE)
    return args


def _language(text: str) -> str:
    if text.lower() not in LANGUAGES:
        raise UsageError(f"`{text[:10]}` is not a template language; use {' or '.join(LANGUAGES)}")
    return text.lower()


def _yes(text: str) -> bool:
    if text.lower() not in ("yes", "no", "true", "false"):
        raise UsageError("use yes or no")
    return text.lower() in ("yes", "true")


def issue_title(incident: Incident) -> str:
    """Title the issue (the same in every language)."""
    return f"RCA {incident.reference}: {incident.title}"


def marker(environment: str, incident: Incident) -> str:
    """Mark an issue as this incident's RCA, so that a lost answer never makes a second issue."""
    return f"<!-- chatops-rca environment={environment} incident={incident.id} -->"


def sections_from_notes(events: list[TimelineEvent]) -> dict[str, list[str]]:
    """Collect the notes that fill the impact, root cause and corrective action sections."""
    found: dict[str, list[str]] = {key: [] for key in _PREFIXES}
    for event in events:
        if event.kind != "note":
            continue
        lowered = event.text.lower()
        for key, prefixes in _PREFIXES.items():
            prefix = next((p for p in prefixes if lowered.startswith(p)), None)
            if prefix is not None:
                found[key].append(event.text[len(prefix) :].strip())
                break
    return found


class GraphLink(Model):
    """A picture or a live graph of the incident's window, linked from the draft."""

    title: str
    url: str


def build_context(
    incident: Incident,
    events: list[TimelineEvent],
    *,
    now: datetime,
    names: dict[str, str],
    latest_backup_at: datetime | None,
    graphs: list[GraphLink] | None = None,
    followups: list[Followup] | None = None,
    language: str = "en",
) -> dict[str, Any]:
    """Gather what the template shows, from the incident record, its timeline and its follow-ups."""
    notes = sections_from_notes(events)
    multi_day = (incident.resolved_at or now).date() != incident.started_at.date()
    timeline = [
        {
            "time": f"{event.at:%Y-%m-%d %H:%M}" if multi_day else f"{event.at:%H:%M}",
            "at": event.at,
            "kind": event.kind,
            "text": event.text,
            "actor": person_name(event.actor, names) if event.actor else "",
        }
        for event in events
    ]
    backup_age = None
    if latest_backup_at is not None:
        backup_age = format_minutes(max(now - latest_backup_at, timedelta(0)))
    return {
        "incident": incident,
        "date": f"{incident.started_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        "duration": format_minutes(incident_duration(incident, now)),
        "resolved": incident.status == "resolved",
        "impact": "; ".join(notes["impact"]) or None,
        "root_causes": notes["cause"],
        "actions": notes["action"],
        "timeline": timeline,
        "commander": person_name(incident.commander, names) if incident.commander else "—",
        "comms_lead": person_name(incident.comms_lead, names) if incident.comms_lead else None,
        "scribe": person_name(incident.scribe, names) if incident.scribe else None,
        "declared_by": person_name(incident.declared_by, names),
        # Already Markdown (user text converted as `md` does), between the markers filing rewrites.
        "followups": followup_filing.section(followups or [], language, names),
        "backup_age": backup_age,
        "backup_at": f"{latest_backup_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if latest_backup_at else None,
        "graphs": graphs or [],
        "now": now,
    }


def render(templates_dir: Path, language: str, context: dict[str, Any], names: dict[str, str]) -> str:
    """Render the draft from templates/rca.<language>.md.j2; a broken template is a clear UsageError."""
    name = f"rca.{language}.md.j2"
    # Markdown, not HTML: escaping would garble it; user text goes through the `md` filter instead.
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701
    )
    environment.filters["md"] = markdown_text(names)
    try:
        return environment.get_template(name).render(**context).strip() + "\n"
    except jinja2.TemplateNotFound:
        raise UsageError(f"there is no RCA template {name} in {templates_dir}", USAGE) from None
    except jinja2.TemplateSyntaxError as error:
        raise UsageError(
            f"the RCA template {name} is broken at line {error.lineno}: {error.message}; nothing was saved",
            USAGE,
        ) from None
    except jinja2.TemplateError as error:
        raise UsageError(
            f"the RCA template {name} failed: {type(error).__name__}: {error}; nothing was saved", USAGE
        ) from None


async def draft(
    store: IncidentStore,
    incident: Incident,
    *,
    language: str,
    templates_dir: Path,
    environment: str,
    actor: str,
    names: dict[str, str],
    latest_backup_at: datetime | None,
    now: datetime | None = None,
    graphs: list[GraphLink] | None = None,
    followups: list[Followup] | None = None,
) -> RcaDraft:
    """Render the draft from the record and timeline and keep it (what was filed is remembered)."""
    now = now or datetime.now(UTC)
    events = await store.events(incident.id)
    context = build_context(
        incident,
        events,
        now=now,
        names=names,
        latest_backup_at=latest_backup_at,
        graphs=graphs,
        followups=followups,
        language=language,
    )
    body = render(templates_dir, language, context, names) + "\n" + marker(environment, incident) + "\n"
    return await store.save_draft(
        RcaDraft(
            incident_id=incident.id,
            language=language,
            title=issue_title(incident),
            body=body,
            rendered_at=now,
            rendered_by=actor,
        )
    )


async def file(
    store: IncidentStore,
    tracker: IssueTracker | None,
    incident: Incident,
    *,
    environment: str,
    actor: str,
    force: bool = False,
    now: datetime | None = None,
    followups: FollowupFiling | None = None,
) -> RcaResult:
    """File the stored draft: create the issue, or update the one filed before; never two issues.

    With `followups`, each follow-up of the incident is then filed as its own issue linked to this
    one, and the draft's list of them is brought up to date (their issues, their state).
    """
    now = now or datetime.now(UTC)
    if tracker is None:
        raise UsageError(
            "GitHub is not configured (GITHUB_TOKEN and CHATOPS_GITHUB_REPO); the draft is kept", USAGE
        )
    try:
        async with store.filing(incident.id):
            stored = await store.draft(incident.id)
            if stored is None:
                raise UsageError(f"{incident.reference} has no RCA draft yet: /rca {incident.id}", USAGE)
            result = await _file_locked(store, tracker, incident, stored, environment, actor, force, now)
            if followups is not None and result.outcome != "not_filed":
                result = await _file_followups(store, tracker, result, followups, environment, force, now)
            return result
    except FilingBusy as busy:
        raise UsageError(str(busy), USAGE) from None


async def _file_locked(
    store: IncidentStore,
    tracker: IssueTracker,
    incident: Incident,
    stored: RcaDraft,
    environment: str,
    actor: str,
    force: bool,
    now: datetime,
) -> RcaResult:
    labels = [LABEL, f"severity:{incident.severity}"]
    number = stored.issue_number
    known_digest = stored.filed_body_sha256
    creating = False
    try:
        if number is None and stored.create_attempted_at is not None:
            # An earlier create got no answer: it may have worked. Adopt that issue rather than open another.
            found = await tracker.find_issue(
                marker(environment, incident), stored.create_attempted_at - _FIND_SLACK
            )
            if found is not None:
                number, known_digest = found.number, body_digest(found.body)
        if number is not None:
            current = await tracker.get_issue(number)
            if not force and known_digest is not None and body_digest(current.body) != known_digest:
                message = (
                    f"issue #{number} was edited on GitHub since it was filed; filing would overwrite"
                    f" those edits. Nothing was changed. Add force=yes to overwrite."
                )
                await store.update_draft(incident.id, last_error=message)
                return _not_filed(incident, await _reload(store, incident), message)
            issue = await tracker.update_issue(number, stored.title, stored.body, labels)
            outcome: Outcome = "updated"
        else:
            creating = True
            # Committed before the call: if the answer is lost, the next filing looks for the issue first.
            await store.update_draft(incident.id, create_attempted_at=now)
            issue = await tracker.create_issue(stored.title, stored.body, labels)
            outcome = "filed"
    except GitHubError as error:
        message = _explain(error, incident)
        fields: dict[str, Any] = {"last_error": message}
        if creating and error.definite:
            fields["create_attempted_at"] = None
        await store.update_draft(incident.id, **fields)
        return _not_filed(incident, await _reload(store, incident), message, error.retry_after)
    await store.update_draft(
        incident.id,
        issue_number=issue.number,
        issue_url=issue.html_url,
        filed_at=now,
        filed_by=actor,
        filed_body_sha256=body_digest(stored.body),
        create_attempted_at=None,
        last_error=None,
    )
    verb = "filed as" if outcome == "filed" else "updated in"
    await store.add_event(incident.id, "rca", actor, f"RCA {verb} GitHub issue #{issue.number}", at=now)
    return RcaResult(outcome=outcome, incident=incident, draft=await _reload(store, incident))


async def _file_followups(
    store: IncidentStore,
    tracker: IssueTracker,
    result: RcaResult,
    filing: FollowupFiling,
    environment: str,
    force: bool,
    now: datetime,
) -> RcaResult:
    """File the follow-ups (each linked to the RCA issue), then list them, with their state, in it."""
    incident, stored = result.incident, result.draft
    assert stored.issue_number is not None and stored.issue_url is not None
    filed = await followup_filing.file_all(
        filing, tracker, incident, stored.issue_url, environment=environment, now=now, force=force
    )
    problems = list(filed.problems)
    fresh = followup_filing.section(filed.followups, stored.language, filing.names)
    body = followup_filing.replace_section(stored.body, fresh)
    if body != stored.body:
        try:
            labels = [LABEL, f"severity:{incident.severity}"]
            await tracker.update_issue(stored.issue_number, stored.title, body, labels)
            await store.update_draft(incident.id, body=body, filed_body_sha256=body_digest(body))
        except GitHubError as error:
            problems.append(f"the RCA's list of follow-ups was not updated: {error.reason}: {error.message}")
    return result.model_copy(
        update={
            "draft": await _reload(store, incident),
            "followups": filed.followups,
            "followup_problems": problems,
        }
    )


def _not_filed(
    incident: Incident, stored: RcaDraft, message: str, retry_after: float | None = None
) -> RcaResult:
    return RcaResult(
        outcome="not_filed",
        incident=incident,
        draft=stored,
        filing_error=message,
        retry_after_seconds=retry_after,
    )


async def _reload(store: IncidentStore, incident: Incident) -> RcaDraft:
    stored = await store.draft(incident.id)
    assert stored is not None  # drafts are never deleted
    return stored


def _explain(error: GitHubError, incident: Incident) -> str:
    """Say what GitHub's refusal means for the person filing."""
    kept = f"Nothing was filed; the draft is kept (/rca {incident.id} file to try again)."
    if error.reason == "rate limited":
        wait = f" for about {error.retry_after:.0f} s" if error.retry_after else ""
        return f"GitHub is rate-limiting the bot; it asked to wait{wait}. {kept}"
    if error.reason == "timeout" or not error.definite:
        return (
            f"GitHub did not confirm ({error.message}); the issue may or may not exist. Filing again"
            f" finds it rather than opening a second one. The draft is kept."
        )
    hints = {
        "auth failed": "the token was refused (401): check GITHUB_TOKEN",
        "forbidden": "the token may not write issues in that repository (403)",
        "not found": "the repository or issue was not found (404): check CHATOPS_GITHUB_REPO and the token",
        "gone": "issues are disabled in that repository, or the issue was deleted (410)",
        "invalid": "GitHub rejected the issue (422)",
    }
    hint = hints.get(error.reason, f"GitHub failed ({error.status})")
    return f"{hint}: {error.message}. {kept}"
