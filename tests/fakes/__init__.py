"""Local fakes of external services, checked against the vendors' published API descriptions."""

from tests.fakes.slack import (
    FakeFile,
    FakeSlack,
    ManualClock,
    MethodSpec,
    ResponseUrlPost,
    SlackCall,
    Violation,
    method_spec,
    validate_blocks,
)
from tests.fakes.slack_requests import (
    block_actions_payload,
    sign,
    signed_interaction_request,
    signed_slash_command_request,
    slash_command_form,
    view_submission_payload,
)
from tests.fakes.specs import load_spec, specs_dir

__all__ = [
    "FakeFile",
    "FakeSlack",
    "ManualClock",
    "MethodSpec",
    "ResponseUrlPost",
    "SlackCall",
    "Violation",
    "block_actions_payload",
    "load_spec",
    "method_spec",
    "sign",
    "signed_interaction_request",
    "signed_slash_command_request",
    "slash_command_form",
    "specs_dir",
    "validate_blocks",
    "view_submission_payload",
]
