"""Shared fixtures: settings pointing at the sandbox, and the sandbox itself."""

from __future__ import annotations

import os

# Tests never read a developer's .env or real tokens.
for _name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "GITHUB_TOKEN"):
    os.environ.pop(_name, None)
