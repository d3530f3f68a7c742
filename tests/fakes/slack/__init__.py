"""A fake Slack Web API that answers as Slack does and checks every call against Slack's spec.

- server.py: FakeSlack itself (HTTP, validation, faults, inspection);
- spec.py: the published OpenAPI description read per method; Block Kit checks;
- documented.py: what Slack's method pages add to that description (parameters, errors);
- state.py: the workspace (channels and the bot's membership, users, messages);
- methods.py: the Web API methods the fake implements;
- limits.py: rate tiers and response_url limits, on a clock a test can move.
"""

from tests.fakes.slack.documented import GENERIC_ERRORS
from tests.fakes.slack.limits import METHOD_TIERS, ManualClock
from tests.fakes.slack.models import FakeFile, ResponseUrlPost, SlackCall, Violation
from tests.fakes.slack.server import FakeSlack
from tests.fakes.slack.spec import MethodSpec, method_spec, validate_blocks

__all__ = [
    "GENERIC_ERRORS",
    "METHOD_TIERS",
    "FakeFile",
    "FakeSlack",
    "ManualClock",
    "MethodSpec",
    "ResponseUrlPost",
    "SlackCall",
    "Violation",
    "method_spec",
    "validate_blocks",
]
