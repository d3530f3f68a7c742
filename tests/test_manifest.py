"""app.yaml is a valid Slack app manifest per Slack's published schema and lists every command."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT7

from bot.registry import COMMAND_NAMES
from tests.fakes.specs import REPO_ROOT, load_spec, specs_dir

MANIFEST_PATH = REPO_ROOT / "app.yaml"

# Every slash command of the product, as documented for users.
PRODUCT_COMMANDS = {
    "/health",
    "/triage",
    "/audit",
    "/rollback",
    "/restart",
    "/restore",
    "/backup",
    "/mfa",
    "/incident",
    "/rca",
    "/graph",
}

# Neither manifest schema enumerates scopes (bot scopes are any string of up to 50 characters).
# The closest published list is the OpenAPI description's oauth2 scopes, which predates Slack's
# granular bot scopes; these are newer and are documented at docs.slack.dev/reference/scopes
# (bookmarks:write: docs.slack.dev/reference/scopes/bookmarks.write, the scope of bookmarks.add and
# bookmarks.edit, docs.slack.dev/reference/methods/bookmarks.add, "Scopes: bookmarks:write").
GRANULAR_SCOPES_NEWER_THAN_SPEC = {"commands", "chat:write.public", "files:write", "bookmarks:write"}


def _refuse_retrieval(uri: str) -> Resource[Any]:
    """Fail instead of fetching: the schemas must resolve from the local copies only."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class mypy cannot see into


def _remote_refs(node: Any) -> set[str]:
    """Collect every absolute `$ref` URL in a schema document."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("http"):
            found.add(ref)
        for value in node.values():
            found |= _remote_refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _remote_refs(item)
    return found


@cache
def manifest_validator() -> jsonschema.Draft7Validator:
    """Build a draft-07 validator for app manifests whose remote `$ref`s resolve to local files."""
    slack_dir = specs_dir() / "slack"
    top = load_spec("slack/manifest.schema.json")
    resources = []
    for url in sorted(_remote_refs(top)):
        # The top schema points at raw.githubusercontent.com/.../schemas/manifest.schema.X.json;
        # the versioned files sit beside it under the same names.
        local = slack_dir / url.rsplit("/", 1)[-1]
        assert local.is_file(), f"{url} has no local copy at {local}"
        contents = json.loads(local.read_text(encoding="utf-8"))
        resources.append((url, Resource.from_contents(contents, default_specification=DRAFT7)))
    registry: Registry[Any] = Registry(retrieve=_refuse_retrieval).with_resources(resources)  # type: ignore[call-arg]
    jsonschema.Draft7Validator.check_schema(top)
    return jsonschema.Draft7Validator(top, registry=registry)


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, Any]:
    """Load app.yaml into the dict Slack would receive."""
    with path.open(encoding="utf-8") as handle:
        manifest: dict[str, Any] = yaml.safe_load(handle)
    return manifest


def manifest_errors(manifest: dict[str, Any]) -> list[str]:
    """Return every schema violation as `path: message`, empty when the manifest is valid."""
    errors = []
    for error in manifest_validator().iter_errors(manifest):
        errors += [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in _applicable(error)
        ]
    return errors


def _applicable(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """Unwrap the top schema's oneOf over versions to the errors of the branch whose gate matched."""
    if error.validator != "oneOf" or not error.context:
        return [error]
    # Each branch is allOf[gate on _metadata.major_version, $ref to a versioned schema]; an error
    # under allOf/0 means that branch is for another version, so its errors are noise.
    by_branch: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
    applicable = [
        subs
        for subs in by_branch.values()
        if not any(list(sub.relative_schema_path)[1:3] == ["allOf", 0] for sub in subs)
    ]
    return applicable[0] if applicable else [error]


def manifest_commands(manifest: dict[str, Any]) -> set[str]:
    """Return the slash commands the manifest declares."""
    return {entry["command"] for entry in manifest["features"]["slash_commands"]}


def test_app_yaml_is_a_valid_manifest() -> None:
    assert manifest_errors(load_manifest()) == []


def test_manifest_declares_every_product_command() -> None:
    manifest = load_manifest()
    assert manifest_commands(manifest) == PRODUCT_COMMANDS
    for entry in manifest["features"]["slash_commands"]:
        assert entry["description"], entry
        assert entry["should_escape"] is False, entry
        assert entry["command"] == "/health" or entry.get("usage_hint"), entry


def test_manifest_covers_every_registered_command() -> None:
    # /mfa is handled beside the registry (it answers only its caller); the manifest has it too.
    registered = {"/" + name.lstrip("/") for name in COMMAND_NAMES} | {"/mfa"}
    missing = registered - manifest_commands(load_manifest())
    assert not missing, f"commands registered by the bot but absent from app.yaml: {sorted(missing)}"


def test_socket_mode_needs_no_request_urls() -> None:
    manifest = load_manifest()
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"] == {"is_enabled": True}
    assert all("url" not in entry for entry in manifest["features"]["slash_commands"])
    # Why that is allowed: the schema requires only command + description for a slash command.
    schema = json.loads((specs_dir() / "slack" / "manifest.schema.1.0.0.json").read_text(encoding="utf-8"))
    item = schema["definitions"]["app-manifests.v1.features.slash_commands"]["items"]
    assert sorted(item["required"]) == ["command", "description"]


def test_bot_scopes_are_known_slack_scopes() -> None:
    published = set(load_spec("slack/web_api_openapi_v2.json")["securityDefinitions"]["slackAuth"]["scopes"])
    scopes = load_manifest()["oauth_config"]["scopes"]["bot"]
    assert len(scopes) == len(set(scopes))
    unknown = set(scopes) - published - GRANULAR_SCOPES_NEWER_THAN_SPEC
    assert not unknown, f"not a Slack scope: {sorted(unknown)}"


def _broken(change: str) -> dict[str, Any]:
    """Return a copy of app.yaml with one field broken in the way `change` names."""
    manifest = copy.deepcopy(load_manifest())
    if change == "command without slash":
        manifest["features"]["slash_commands"][0]["command"] = "health"
    elif change == "name too long":
        manifest["display_information"]["name"] = "c" * 36
    elif change == "unknown top-level key":
        manifest["feature"] = manifest["features"]
    elif change == "always_online not boolean":
        manifest["features"]["bot_user"]["always_online"] = "yes"
    elif change == "no display_information":
        del manifest["display_information"]
    elif change == "slash command url not http":
        manifest["features"]["slash_commands"][0]["url"] = "ftp://example.com/slack"
    elif change == "interactivity without is_enabled":
        manifest["settings"]["interactivity"] = {}
    elif change == "scope too long":
        manifest["oauth_config"]["scopes"]["bot"].append("x" * 51)
    else:
        raise AssertionError(change)
    return manifest


@pytest.mark.parametrize(
    "change",
    [
        "command without slash",
        "name too long",
        "unknown top-level key",
        "always_online not boolean",
        "no display_information",
        "slash command url not http",
        "interactivity without is_enabled",
        "scope too long",
    ],
)
def test_broken_manifest_fails_validation(change: str) -> None:
    assert manifest_errors(_broken(change)), f"a manifest with '{change}' validated"


def test_validator_never_fetches_remote_schemas() -> None:
    schema = {"$ref": "https://example.invalid/schema.json"}
    validator = jsonschema.Draft7Validator(schema, registry=Registry(retrieve=_refuse_retrieval))  # type: ignore[call-arg]
    with pytest.raises(Unresolvable):
        validator.validate({})


def test_manifest_declares_the_incident_workspace() -> None:
    # What the incident workspace needs (issue 18): the Home tab and the event that publishes it,
    # and the scopes of the calls it makes (conversations.create / invite, bookmarks.add / edit).
    manifest = load_manifest()
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert "app_home_opened" in manifest["settings"]["event_subscriptions"]["bot_events"]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"channels:manage", "groups:write", "bookmarks:write", "usergroups:read", "users:read"} <= scopes
    # Socket Mode: events come over the socket, so no request URL is declared for them either.
    assert "request_url" not in manifest["settings"]["event_subscriptions"]


def test_an_event_subscription_with_a_bad_url_fails_validation() -> None:
    manifest = copy.deepcopy(load_manifest())
    manifest["settings"]["event_subscriptions"]["request_url"] = "ftp://example.com/events"
    assert manifest_errors(manifest)
    manifest["settings"]["event_subscriptions"] = {"bot_events": ["app_home_opened"], "user_events": 3}
    assert manifest_errors(manifest)
