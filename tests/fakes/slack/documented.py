"""What Slack documents that the OpenAPI description (slackapi/slack-api-specs bc08db4) predates.

The fake checks every call against the published description (spec.py). Where Slack's own method
reference says more, it is written here by hand, each entry with where Slack says it, so that a
parameter or an error name is accepted only because Slack documents it, never as a blanket allow.

Sources:
- Slack's method reference, docs.slack.dev/reference/methods/<method> (formerly
  api.slack.com/methods/<method>): arguments and the "Errors" table of each method. Where the page
  could not be read here, the copy of it kept machine-readable by slack-ruby/slack-api-ref
  (methods/<group>/<method>.json, scraped from those pages) was used, and is named.
- Using APIs with organization-wide apps, api.slack.com/enterprise/apps/changes-apis (team_id).
"""

from __future__ import annotations

from typing import Any


def _param(name: str, location: str, type_: str, required: bool = False) -> dict[str, Any]:
    """Build a Swagger-2-style parameter object for a method or argument missing from the spec."""
    return {"name": name, "in": location, "type": type_, "required": required}


# Methods the description lacks entirely.
# - files.getUploadURLExternal / files.completeUploadExternal (the external upload flow that
#   slack_sdk's files_upload_v2 uses): docs.slack.dev/reference/methods/files.getUploadURLExternal
#   (filename + length required; alt_txt, snippet_type) and .../files.completeUploadExternal
#   (`files`, a JSON array of {"id", "title"?}, required; channel_id, channels, initial_comment,
#   thread_ts, blocks). The array's shape is checked in spec.check_complete_upload.
# - apps.connections.open (Socket Mode): docs.slack.dev/reference/methods/apps.connections.open,
#   no arguments, an app-level (xapp-) token, POST.
# - bookmarks.add / bookmarks.edit (the incident channel's runbook, graphs and RCA):
#   docs.slack.dev/reference/methods/bookmarks.add ("Required arguments: token, channel_id, title,
#   type"; optional link, emoji, entity_id, access_level, parent_id; "Bookmarking a link requires:
#   channel_id, title, type, and a url"; form or JSON; scope bookmarks:write) and
#   api.slack.com/methods/bookmarks.edit ("Required arguments: token, bookmark_id, channel_id";
#   optional emoji, link, title). Machine-readable copies: slack-ruby/slack-api-ref
#   methods/bookmarks/bookmarks.add.json and bookmarks.edit.json.
EXTRA_METHODS: dict[str, dict[str, Any]] = {
    "files.getUploadURLExternal": {
        "verbs": ["get", "post"],
        "consumes": ["application/x-www-form-urlencoded"],
        "parameters": [
            _param("token", "header", "string", True),
            _param("filename", "formData", "string", True),
            _param("length", "formData", "integer", True),
            _param("alt_txt", "formData", "string"),
            _param("snippet_type", "formData", "string"),
        ],
    },
    "files.completeUploadExternal": {
        "verbs": ["post"],
        "consumes": ["application/x-www-form-urlencoded", "application/json"],
        "parameters": [
            _param("token", "header", "string", True),
            _param("files", "formData", "string", True),
            _param("channel_id", "formData", "string"),
            _param("channels", "formData", "string"),
            _param("initial_comment", "formData", "string"),
            _param("thread_ts", "formData", "string"),
            _param("blocks", "formData", "string"),
        ],
    },
    "apps.connections.open": {
        "verbs": ["post"],
        "consumes": ["application/x-www-form-urlencoded"],
        "parameters": [_param("token", "header", "string", True)],
    },
    "bookmarks.add": {
        "verbs": ["post"],
        "consumes": ["application/x-www-form-urlencoded", "application/json"],
        "parameters": [
            _param("token", "header", "string", True),
            _param("channel_id", "formData", "string", True),
            _param("title", "formData", "string", True),
            _param("type", "formData", "string", True),
            _param("link", "formData", "string"),
            _param("emoji", "formData", "string"),
            _param("entity_id", "formData", "string"),
            _param("access_level", "formData", "string"),
            _param("parent_id", "formData", "string"),
        ],
    },
    "bookmarks.edit": {
        "verbs": ["post"],
        "consumes": ["application/x-www-form-urlencoded", "application/json"],
        "parameters": [
            _param("token", "header", "string", True),
            _param("bookmark_id", "formData", "string", True),
            _param("channel_id", "formData", "string", True),
            _param("title", "formData", "string"),
            _param("link", "formData", "string"),
            _param("emoji", "formData", "string"),
        ],
    },
}

# Arguments Slack takes on every method although no method's entry in the description lists
# them. `team_id`: slack_bolt builds a client per request with `team_id=` the event's team
# (slack_bolt/app/async_app.py, AsyncWebClient(team_id=req.context.team_id)), and slack_sdk then
# sends it with every call. Slack: "a shortcut is to always pass team_id to these methods. Even if
# your token is a single-workspace installation, the extra parameter will be accepted ... This field
# will be ignored if the API call is sent using a workspace-level token."
# (api.slack.com/enterprise/apps/changes-apis, "API methods that accept team_id").
EVERY_METHOD_PARAMS: dict[str, dict[str, Any]] = {
    "team_id": _param("team_id", "formData", "string"),
}

# The errors every method's page now lists after its own (authentication, transport, Slack's
# own trouble): e.g. docs.slack.dev/reference/methods/files.getUploadURLExternal and
# chat.update (slack-api-ref methods/files/files.getUploadURLExternal.json, chat/chat.update.json).
GENERIC_ERRORS: frozenset[str] = frozenset(
    {
        "access_denied",
        "accesslimited",
        "account_inactive",
        "deprecated_endpoint",
        "ekm_access_denied",
        "enterprise_is_restricted",
        "fatal_error",
        "internal_error",
        "invalid_arg_name",
        "invalid_arguments",
        "invalid_array_arg",
        "invalid_auth",
        "invalid_charset",
        "invalid_form_data",
        "invalid_post_type",
        "method_deprecated",
        "missing_post_type",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
        "not_authed",
        "org_login_required",
        "ratelimited",
        "request_timeout",
        "service_unavailable",
        "team_access_not_granted",
        "team_added_to_org",
        "token_expired",
        "token_revoked",
        "two_factor_setup_required",
    }
)

# Method-specific errors Slack's pages list and the description's `error` enum lacks (or the
# description has no enum for the method at all, as for views.*). Only methods the bot calls or
# the fake implements are here.
EXTRA_ERRORS: dict[str, frozenset[str]] = {
    # docs.slack.dev/reference/methods/chat.postMessage, Errors; Slack answering invalid_blocks to
    # chat.postMessage: slackapi/python-slack-sdk#1257.
    "chat.postMessage": frozenset(
        {
            "invalid_blocks",
            "invalid_blocks_format",
            "restricted_action",
            "restricted_action_read_only_channel",
            "restricted_action_thread_only_channel",
            "restricted_action_non_threadable_channel",
            "as_user_not_supported",
        }
    ),
    # docs.slack.dev/reference/methods/chat.postEphemeral (slack-api-ref chat/chat.postEphemeral.json):
    # not_in_channel is the app's own membership, user_not_in_channel the recipient's.
    "chat.postEphemeral": frozenset(
        {
            "invalid_blocks",
            "invalid_blocks_format",
            "invalid_attachments",
            "not_in_channel",
            "cannot_reply_to_message",
            "message_limit_exceeded",
            "markdown_text_conflict",
        }
    ),
    # docs.slack.dev/reference/methods/chat.update (slack-api-ref chat/chat.update.json).
    "chat.update": frozenset(
        {
            "invalid_blocks",
            "invalid_blocks_format",
            "invalid_attachments",
            "block_mismatch",
            "cant_broadcast_message",
            "update_failed",
            "is_inactive",
        }
    ),
    # pins.add's page lists no membership error. The fake answers not_in_channel for a public
    # channel the app is not in, as Slack answers for files.completeUploadExternal (below), which
    # likewise needs real membership. ASSUMED, not documented for pins.add.
    "pins.add": frozenset({"file_comment_not_found", "file_not_found", "not_in_channel"}),
    # docs.slack.dev/reference/methods/usergroups.users.list (slack-api-ref
    # usergroups/usergroups.users.list.json).
    "usergroups.users.list": frozenset({"no_such_subteam", "is_bot", "user_is_restricted"}),
    # The description has no error enum for views.*: docs.slack.dev/reference/methods/views.open,
    # views.update, views.push (slack-api-ref views/views.open.json, views/views.update.json;
    # slack_kit priv/docs/methods/views.push.json). An invalid view is answered
    # `invalid_arguments` (a generic error) with the reasons in response_metadata.messages.
    "views.open": frozenset(
        {
            "duplicate_external_id",
            "view_too_large",
            "expired_trigger_id",
            "invalid_trigger_id",
            "exchanged_trigger_id",
        }
    ),
    "views.push": frozenset(
        {
            "duplicate_external_id",
            "view_too_large",
            "expired_trigger_id",
            "invalid_trigger_id",
            "exchanged_trigger_id",
            "push_limit_reached",
            "not_found",
        }
    ),
    "views.update": frozenset({"hash_conflict", "not_found", "duplicate_external_id", "view_too_large"}),
    # docs.slack.dev/reference/methods/files.getUploadURLExternal (slack-api-ref
    # files/files.getUploadURLExternal.json).
    "files.getUploadURLExternal": frozenset(
        {
            "missing_argument",
            "storage_limit_reached",
            "file_uploads_disabled",
            "file_upload_size_restricted",
            "snippet_too_large",
            "unknown_snippet_type",
            "unknown_subtype",
            "alt_txt_too_large",
        }
    ),
    # docs.slack.dev/reference/methods/files.completeUploadExternal (slack-api-ref
    # files/files.completeUploadExternal.json): invalid_channel, posting_to_channel_denied,
    # file_not_found, file_update_failed. Plus not_in_channel, which the page does not list but
    # Slack answers when the app is not in the (public) channel, even with chat:write.public:
    # "files.completeUploadExternal ... requires real channel membership and throws
    # not_in_channel when the bot has never been invited" (getnao/nao#1372). UNDOCUMENTED.
    "files.completeUploadExternal": frozenset(
        {
            "invalid_channel",
            "posting_to_channel_denied",
            "file_not_found",
            "file_update_failed",
            "not_in_channel",
        }
    ),
    # docs.slack.dev/reference/methods/apps.connections.open (slack-api-ref apps/apps.connections.open.json).
    "apps.connections.open": frozenset({"missing_args", "insecure_request", "forbidden_team", "is_bot"}),
    # The "Errors" tables of docs.slack.dev/reference/methods/bookmarks.add and bookmarks.edit
    # (slack-ruby/slack-api-ref methods/bookmarks/bookmarks.add.json, bookmarks.edit.json).
    "bookmarks.add": frozenset(
        {
            "channel_not_found",
            "file_not_found",
            "invalid_bookmark_type",
            "invalid_shortcut_type",
            "invalid_child_type",
            "invalid_emoji",
            "invalid_entity_id",
            "invalid_link",
            "invalid_parent_type",
            "not_implemented",
            "parent_bookmark_disabled",
            "parent_with_link",
            "permission_denied",
            "too_many_bookmarks",
            "is_bot",
        }
    ),
    "bookmarks.edit": frozenset(
        {
            "channel_not_found",
            "invalid_bookmark_type",
            "invalid_emoji",
            "invalid_link",
            "not_found",
            "not_implemented",
            "parent_with_link",
            "permission_denied",
            "restricted_action",
            "is_bot",
        }
    ),
}
