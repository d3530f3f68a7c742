"""/audit's grammar: every form and option, and bad input refused before any query runs."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.invocation import Invocation
from bot.runners.audit import run as run_audit
from bot.services import Services
from commands import audit
from commands.audit import AuditFilter, AuditQuery, ExportRequest, IndexesRequest, Limits, parse
from commands.base import UsageError, tokenize
from tests.audit_fixtures import SpyDatabase
from tests.conftest import make_settings

LIMITS = Limits(default_limit=20, max_limit=200, max_window=timedelta(days=30), export_max_rows=1000)


def query(tokens: list[str]) -> AuditQuery:
    parsed = parse(tokens, LIMITS)
    assert isinstance(parsed, AuditQuery)
    return parsed


def export(tokens: list[str]) -> ExportRequest:
    parsed = parse(["export", *tokens], LIMITS)
    assert isinstance(parsed, ExportRequest)
    return parsed


def refused(tokens: list[str]) -> str:
    with pytest.raises(UsageError) as caught:
        parse(tokens, LIMITS)
    return caught.value.message


# ---------------------------------------------------------------- the forms


def test_user_by_name_and_by_id() -> None:
    by_name = query(["user", "mariana.costa"])
    assert by_name.filter == AuditFilter(username="mariana.costa")
    assert (by_name.since, by_name.limit) == (timedelta(hours=24), 20)
    user_id = uuid.uuid4()
    assert query(["user", str(user_id)]).filter == AuditFilter(user_id=user_id)
    assert query(["user", user_id.hex.upper()]).filter == AuditFilter(user_id=user_id)


def test_ip_addresses_and_networks_v4_and_v6() -> None:
    assert query(["ip", "192.168.1.100"]).filter.network == ipaddress.ip_network("192.168.1.100/32")
    assert query(["ip", "2a03:b0c0:3:d0::1a51"]).filter.network == ipaddress.ip_network(
        "2a03:b0c0:3:d0::1a51/128"
    )
    assert query(["ip", "10.0.0.0/8"]).filter.network == ipaddress.ip_network("10.0.0.0/8")
    assert query(["ip", "2001:db8::/32"]).filter.network == ipaddress.ip_network("2001:db8::/32")


def test_a_network_with_host_bits_is_searched_as_its_network_and_says_so() -> None:
    parsed = query(["ip", "192.168.1.77/24"])
    assert parsed.filter.network == ipaddress.ip_network("192.168.1.0/24")
    assert parsed.note == "searched 192.168.1.0/24"


def test_request_id_matches_both_spellings() -> None:
    request_id = uuid.uuid4()
    for typed in (request_id.hex, str(request_id)):
        assert sorted(query(["request", typed]).filter.request_ids or []) == sorted(
            [request_id.hex, str(request_id)]
        )
    # As typed first (the title shows it), then the spellings the platform writes.
    upper = str(request_id).upper()
    assert query(["request", upper]).filter.request_ids == [upper, request_id.hex, str(request_id)]


# Request and trace ids as real platforms write them: any token of printable characters.
REAL_IDS = [
    "req-4242424",
    "01ARZ3NDEKTSV4RRFFQ69G5FAV",  # ULID
    "00f067aa0ba902b7",  # 16 hex (a span id, Datadog-style ids)
    "4bf92f3577b34da6a3ce929d0e0e4736",  # 32 hex (W3C trace id)
    "1-5759e988-bd862e3fe1be46a994272793",  # AWS X-Ray
    "5f0c3c1e-9d1b-4c6e-8f3a-0d2b7e6a9c41",  # UUID
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    "abc",
    "x",
    "req_42%",  # LIKE wildcards mean themselves
    "a.*b[c]+(d)?",  # so do regex metacharacters
    "back\\slash",
    "café-é",
    "i" * 128,
]


@pytest.mark.parametrize("typed", REAL_IDS)
def test_request_ids_as_platforms_write_them(typed: str) -> None:
    request_ids = query(["request", typed]).filter.request_ids
    assert request_ids is not None and request_ids[0] == typed


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("a b", "contains a space"),
        ("a\u00a0b", "contains a space"),
        ("req'1", "contains a quote (')"),
        ('req"1', 'contains a quote (")'),
        ("req`1", "contains a quote (`)"),
        ("“req-1”", "contains a quote (“)"),
        ("req\t1", "control or invisible character (U+0009)"),
        ("req\x001", "control or invisible character (U+0000)"),
        ("req\u200b1", "control or invisible character (ZERO WIDTH SPACE)"),
        ("req\u202e1", "control or invisible character (RIGHT-TO-LEFT OVERRIDE)"),
        ("i" * 129, "129 characters long, and an id has at most 128"),
        ("   ", "a request id is empty"),
    ],
)
def test_what_cannot_be_a_request_id_is_refused_by_name(typed: str, message: str) -> None:
    assert message in refused(["request", typed])


def test_the_other_forms_and_their_options() -> None:
    failed = query(["failed-logins", "min=3", "since=2h", "limit=7"])
    assert failed.filter == AuditFilter(failed_logins=True)
    assert (failed.min_failures, failed.since, failed.limit) == (3, timedelta(hours=2), 7)
    assert query(["failed-logins"]).min_failures == 5
    assert query(["failed-logins", "min=0"]).min_failures == 0
    assert query(["mfa"]).filter.actions == ["MFA_CHALLENGE_FAILED"]
    assert query(["security", "--since=30d"]).filter.actions == list(audit.SECURITY_ACTIONS)
    assert parse(["indexes"], LIMITS) == IndexesRequest()


def test_slack_text_and_argv_read_the_same() -> None:
    assert parse(tokenize('user "ana silva" since=1h limit=5'), LIMITS) == parse(
        ["user", "ana silva", "--since=1h", "--limit=5"], LIMITS
    )


@pytest.mark.parametrize("name", ["o'brien; DROP TABLE audit_log", "-o", "--output", "two words", "ana"])
def test_export_arguments_reproduce_the_query(name: str) -> None:
    original = query(["user", name, "since=2h"])
    again = export(tokenize(original.export_arguments())[1:])
    assert again.filter == original.filter and again.output is None
    assert again.since == original.since and again.format == "csv"


# ---------------------------------------------------------------- export


def test_export_defaults_and_filters() -> None:
    plain = export(["csv"])
    assert (plain.format, plain.since, plain.limit, plain.filter) == (
        "csv",
        timedelta(days=7),
        1000,
        AuditFilter(),
    )
    combined = export(["json", "user", "ana", "ip=10.0.0.0/8", "action=login,permission_denied", "limit=9"])
    assert combined.filter == AuditFilter(
        username="ana", network=ipaddress.ip_network("10.0.0.0/8"), actions=["LOGIN", "PERMISSION_DENIED"]
    )
    assert combined.limit == 9 and combined.form == "user"
    mfa = export(["csv", "security", "action=PERMISSION_DENIED,FILE_UPLOAD"])
    assert mfa.filter.actions == ["PERMISSION_DENIED"]


def test_export_output_flag_forms() -> None:
    assert export(["csv", "--output", "/tmp/a.csv"]).output == "/tmp/a.csv"
    assert export(["csv", "-o", "a.csv", "mfa"]).output == "a.csv"
    assert export(["csv", "--output=b.csv"]).output == "b.csv"
    assert export(["csv", "output=-"]).output == "-"


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["export"], "export needs a format: csv or json"),
        (["export", "since=1d"], "export needs a format"),
        (["export", "xml"], "`xml` is not an export format"),
        (["export", "csv", "user", "ana", "user=bob"], "`user` is given twice"),
        (["export", "csv", "mfa", "action=LOGIN"], "action= leaves none of this form's actions"),
        (["export", "csv", "action=drop table"], "`DROP TABLE` is not an action name"),
        (["export", "csv", "action=,"], "name at least one action"),
        (["export", "csv", "-o"], "-o needs a file name"),
        (["export", "csv", "limit=1001"], "limit: 1001 is outside 1..1000"),
        (["export", "csv", "user=a\x00b"], "user: the user contains a NUL character"),
    ],
)
def test_export_refusals(tokens: list[str], message: str) -> None:
    assert message in refused(tokens)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([], "say what to look at"),
        (["users"], "unknown form `users`"),
        (["user"], "`user` needs a user id or username"),
        (["user", "since=1h"], "`user` needs a user id or username"),
        (["user", ""], "the user is empty"),
        (["user", "a\x00b"], "contains a NUL character"),
        (["user", "x" * 16_385], "16385 characters long"),
        (["user", "\ud800"], "lone surrogate"),
        (["user", "123e4567-e89b-12d3-a456-42661417400"], "looks like a user id but is not a UUID"),
        (["user", "ana", "min=3"], "unknown option `min`"),
        (["user", "ana", "bob"], "unexpected argument `bob`"),
        (["ip"], "`ip` needs an address or CIDR"),
        (["ip", "10.0.0.300"], "`10.0.0.300` is not an IP address or CIDR network"),
        (["ip", "10.0.0.0/33"], "is not an IP address or CIDR network"),
        (["ip", "2001:db8::/129"], "is not an IP address or CIDR network"),
        (["ip", "1.2.3"], "is not an IP address or CIDR network"),
        (["ip", "10.0.0.0/8/8"], "is not an IP address or CIDR network"),
        (["ip", "' OR 1=1 --"], "is not an IP address or CIDR network"),
        (["ip", "fe80::1%eth0"], "zone index"),
        (["request", "a b"], "`a b` is not a request id: it contains a space"),
        (["request", "'; DROP TABLE audit_log; --"], "is not a request id: it contains a quote"),
        (["mfa", "since=0m"], "since: a duration must be more than zero"),
        (["mfa", "since=31d"], "since: `31d` is longer than the maximum of 30d"),
        (["mfa", "since=1w"], "since: `1w` is not a duration"),
        (["mfa", "since=24"], "since: `24` is not a duration"),
        (["mfa", "limit=0"], "limit: 0 is outside 1..200"),
        (["mfa", "limit=201"], "limit: 201 is outside 1..200"),
        (["mfa", "limit=-1"], "limit: `-1` is not a whole number"),
        (["mfa", "limit=1e3"], "limit: `1e3` is not a whole number"),
        (["failed-logins", "min=-1"], "min: `-1` is not a whole number"),
        (["failed-logins", "min=five"], "min: `five` is not a whole number"),
        (["security", "since=1h", "since=2h"], "option `since` given twice"),
        (["indexes", "now"], "unexpected argument `now`"),
    ],
)
def test_bad_input_gets_a_specific_error(tokens: list[str], message: str) -> None:
    assert message in refused(tokens)


@pytest.fixture(scope="module")
def spied() -> tuple[Services, SpyDatabase]:
    services = Services.build(make_settings())
    spy = SpyDatabase()
    services.platform_db = spy  # type: ignore[assignment]
    return services, spy


BAD = [
    ["ip", "10.0.0.300"],
    ["ip", "2001:db8::/200"],
    ["request", "not an id"],
    ["user", "123e4567-e89b-12d3-a456-42661417400"],
    ["security", "since=90d"],
    ["security", "limit=99999"],
    ["mfa", "since=soon"],
    ["export", "csv", "ip=999.0.0.1"],
    ["export", "csv", "since=-1d"],
    ["export", "yaml"],
]


@pytest.mark.parametrize("tokens", BAD, ids=lambda tokens: " ".join(tokens))
async def test_bad_input_runs_no_query(spied: tuple[Services, SpyDatabase], tokens: list[str]) -> None:
    services, spy = spied
    with pytest.raises(UsageError):
        await run_audit(services, tokens, Invocation("test", "slack"))
    assert spy.calls == 0


async def test_output_is_refused_from_slack_before_any_query(spied: tuple[Services, SpyDatabase]) -> None:
    services, spy = spied
    with pytest.raises(UsageError, match="from Slack the file comes in the thread"):
        await run_audit(services, ["export", "csv", "output=/etc/passwd"], Invocation("test", "slack"))
    assert spy.calls == 0


# ---------------------------------------------------------------- properties

any_text = st.text(max_size=300)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=any_text)
def test_any_text_as_an_address_is_a_network_or_a_specific_error(text: str) -> None:
    try:
        parsed = query(["ip", text])
    except UsageError as error:
        assert error.message.startswith("`") or "the address" in error.message
        return
    assert parsed.filter.network == ipaddress.ip_network(text.strip(), strict=False)


@settings(max_examples=300)
@given(text=any_text.filter(lambda text: not audit.KNOWN_OPTION.match(text)))
def test_any_text_as_a_request_id_is_taken_verbatim_or_refused_by_name(text: str) -> None:
    try:
        parsed = query(["request", text])
    except UsageError as error:
        assert "is not a request id: it " in error.message or error.message == "a request id is empty"
        stripped = text.strip()
        assert (
            not stripped
            or len(stripped) > 128
            or any(
                not char.isprintable() or char.isspace() or char in "'\"`‘’“”„«»‚‛‟‹›" for char in stripped
            )
        )
        return
    assert parsed.filter.request_ids is not None and parsed.filter.request_ids[0] == text.strip()


@settings(max_examples=300)
@given(text=any_text.filter(lambda text: not audit.KNOWN_OPTION.match(text)))
def test_any_text_as_a_username_is_taken_verbatim(text: str) -> None:
    try:
        parsed = query(["user", text])
    except UsageError as error:
        assert text == "" or "\x00" in text or "UUID" in error.message or "surrogate" in error.message
        return
    assert parsed.filter.username == text or parsed.filter.user_id == uuid.UUID(text.strip())


@settings(max_examples=200)
@given(text=st.text(max_size=12))
def test_any_since_or_limit_is_read_or_refused_by_name(text: str) -> None:
    for option in ("since", "limit"):
        try:
            query(["mfa", f"{option}={text}"])
        except UsageError as error:
            assert error.message.startswith(f"{option}: ")


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=any_text.filter(lambda text: not _valid_network(text)))
async def test_no_malformed_address_reaches_the_database(
    spied: tuple[Services, SpyDatabase], text: str
) -> None:
    services, spy = spied
    with pytest.raises(UsageError):
        await run_audit(services, ["ip", text], Invocation("test", "cli"))
    assert spy.calls == 0


def _valid_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return False
    return "%" not in text and "\x00" not in text
