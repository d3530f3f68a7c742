"""Locate the vendors' published API descriptions that the fakes check requests against."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

# tests/fakes/specs.py -> parents[2] is the repo root. CI clones the repo into another folder
# with shared/ beside it, so the specs are always found relative to the repo, never by an
# absolute path.
REPO_ROOT = Path(__file__).resolve().parents[2]
SPECS_DIR_ENV = "CHATOPS_SPECS_DIR"


def specs_dir() -> Path:
    """Return the folder holding the published specs (`$CHATOPS_SPECS_DIR` or `../shared/specs`)."""
    override = os.environ.get(SPECS_DIR_ENV)
    path = Path(override) if override else REPO_ROOT / ".." / "shared" / "specs"
    path = path.resolve()
    if not path.is_dir():
        raise FileNotFoundError(
            f"published specs not found at {path}; set {SPECS_DIR_ENV} to the shared/specs folder"
        )
    return path


@cache
def load_spec(relative: str) -> dict[str, Any]:
    """Load and cache one JSON spec file, e.g. `slack/web_api_openapi_v2.json`."""
    with (specs_dir() / relative).open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data
