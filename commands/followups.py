"""Follow-ups filed with the RCA: each its own GitHub issue, linked back to the RCA issue, once.

`/incident followup <text> [owner=@u]` records one (commands/incident.py). Filing the RCA files
each follow-up not yet filed (create), and brings the others up to date (update, only when what the
bot would write changed and nobody edited the issue on GitHub since); a lost answer is found again
by the marker in the body, never filed twice. The RCA lists them, with their issue and its state,
between two markers that `replace_section` rewrites once the issues exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from adapters.followup_store import Followup, FollowupStore
from adapters.github import GitHubError, Issue
from adapters.incident_store import Incident
from commands.issues import IssueTracker, body_digest, markdown_text, person_name

# Markdown's own comment (a link reference definition GitHub shows nothing of), on lines of their
# own with blank lines around: the RCA's list of follow-ups is found between them again.
SECTION_START = "[//]: # (chatops-followups)"
SECTION_END = "[//]: # (/chatops-followups)"
DEFAULT_LABELS = ("follow-up",)
# How far before a create attempt to look for the issue it may have opened.
_FIND_SLACK = timedelta(minutes=10)
TITLE_LIMIT = 100

_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "none": "_None yet. `/incident followup <what to do> [owner=@user]` adds one; filing the RCA"
        " files each as a GitHub issue._",
        "owner": "owner",
        "unfiled": "not filed yet",
        "open": "open",
        "closed": "closed",
    },
    "pt": {
        "none": "_Nenhuma ainda. `/incident followup <o que fazer> [owner=@usuário]` adiciona uma;"
        " registrar o RCA registra cada uma como issue no GitHub._",
        "owner": "responsável",
        "unfiled": "ainda não registrada",
        "open": "aberta",
        "closed": "fechada",
    },
}


@dataclass
class FollowupFiling:
    """What filing follow-ups needs beside the tracker: their store, labels, and people's names."""

    store: FollowupStore
    labels: list[str] = field(default_factory=lambda: list(DEFAULT_LABELS))
    names: dict[str, str] = field(default_factory=dict)


@dataclass
class FiledFollowups:
    """What filing did: the follow-ups as they are now, and what went wrong (one line each)."""

    followups: list[Followup]
    problems: list[str] = field(default_factory=list)


def marker(environment: str, followup: Followup) -> str:
    """Mark an issue as this follow-up's, so that a lost answer never makes a second issue."""
    where = f"environment={environment} incident={followup.incident_id} id={followup.id}"
    return f"<!-- chatops-followup {where} -->"


def section(followups: list[Followup], language: str, names: dict[str, str]) -> str:
    """Write the RCA's list of follow-ups, between its markers, in the draft's language."""
    words = _WORDS.get(language, _WORDS["en"])
    convert: Callable[[str], str] = markdown_text(names)
    lines = [SECTION_START, ""]
    for item in followups:
        done = "x" if item.issue_state == "closed" else " "
        owner = f" — {words['owner']} {convert(person_name(item.owner, names))}" if item.owner else ""
        if item.issue_number is not None and item.issue_url:
            state = words.get(item.issue_state or "open", item.issue_state or "")
            where = f" · [#{item.issue_number}]({item.issue_url}) ({state})"
        else:
            where = f" · {words['unfiled']}"
        lines.append(f"- [{done}] {convert(item.text)}{owner}{where}")
    if not followups:
        lines.append(words["none"])
    lines += ["", SECTION_END]
    return "\n".join(lines)


def replace_section(body: str, new_section: str) -> str:
    """Put a fresh list of follow-ups in place of the one in `body` (unchanged when it has none)."""
    start = body.find(SECTION_START)
    end = body.find(SECTION_END, start + 1) if start >= 0 else -1
    if start < 0 or end < 0:
        return body
    return body[:start] + new_section + body[end + len(SECTION_END) :]


def issue_title(incident: Incident, followup: Followup) -> str:
    """Title a follow-up's issue: the incident and the first line of what to do."""
    first = followup.text.strip().splitlines()[0] if followup.text.strip() else "follow-up"
    title = f"{incident.reference} follow-up: {first}"
    return title if len(title) <= TITLE_LIMIT else title[: TITLE_LIMIT - 1] + "…"


def issue_body(
    incident: Incident, followup: Followup, rca_url: str, environment: str, names: dict[str, str]
) -> str:
    """Write a follow-up's issue: what to do, who owns it, the RCA it comes from, and its marker."""
    convert = markdown_text(names)
    lines = [
        f"Follow-up of **{incident.reference} · {convert(incident.title)}** — RCA: {rca_url}",
        "",
        convert(followup.text),
        "",
    ]
    if followup.owner:
        lines.append(f"**Owner:** {convert(person_name(followup.owner, names))}")
    lines.append(f"**Added by:** {convert(person_name(followup.created_by, names))}")
    lines += ["", marker(environment, followup), ""]
    return "\n".join(lines)


async def file_all(
    filing: FollowupFiling,
    tracker: IssueTracker,
    incident: Incident,
    rca_url: str,
    *,
    environment: str,
    now: datetime,
    force: bool = False,
) -> FiledFollowups:
    """File every follow-up of an incident (create or update), each linked back to the RCA issue."""
    problems: list[str] = []
    done: list[Followup] = []
    for item in await filing.store.of(incident.id):
        try:
            done.append(await _file_one(filing, tracker, incident, item, rca_url, environment, now, force))
        except GitHubError as error:
            problem = f"follow-up {item.id} ({item.text[:40]}): GitHub said {error.reason}: {error.message}"
            fields: dict[str, object] = {"last_error": problem[:500]}
            if item.issue_number is None and error.definite:
                fields["create_attempted_at"] = None
            done.append(await filing.store.update(item.id, **fields))
            problems.append(problem)
    return FiledFollowups(done, problems)


async def _file_one(
    filing: FollowupFiling,
    tracker: IssueTracker,
    incident: Incident,
    item: Followup,
    rca_url: str,
    environment: str,
    now: datetime,
    force: bool,
) -> Followup:
    title = issue_title(incident, item)
    body = issue_body(incident, item, rca_url, environment, filing.names)
    number, known = item.issue_number, item.filed_body_sha256
    if number is None and item.create_attempted_at is not None:
        found = await tracker.find_issue(marker(environment, item), item.create_attempted_at - _FIND_SLACK)
        if found is not None:
            number, known = found.number, body_digest(found.body)
            await filing.store.update(item.id, issue_number=found.number, issue_url=found.html_url)
    if number is None:
        # Committed before the call: if the answer is lost, the next filing looks for the issue first.
        await filing.store.update(item.id, create_attempted_at=now)
        issue = await tracker.create_issue(title, body, list(filing.labels))
        return await _filed(filing, item, issue, body)
    current = await tracker.get_issue(number)
    edited = known is not None and body_digest(current.body) != known
    if (edited and not force) or body_digest(current.body) == body_digest(body):
        # Edited on GitHub since: their words stay. Or nothing to change. Only its state is new.
        return await filing.store.update(
            item.id,
            issue_number=current.number,
            issue_url=current.html_url,
            issue_state=current.state,
            last_error=None,
            create_attempted_at=None,
        )
    issue = await tracker.update_issue(number, title, body)
    return await _filed(filing, item, issue, body)


async def _filed(filing: FollowupFiling, item: Followup, issue: Issue, body: str) -> Followup:
    return await filing.store.update(
        item.id,
        issue_number=issue.number,
        issue_url=issue.html_url,
        issue_state=issue.state,
        filed_body_sha256=body_digest(body),
        create_attempted_at=None,
        last_error=None,
    )
