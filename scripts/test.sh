#!/usr/bin/env bash
# Install everything and run the whole test suite against real services (the sandbox starts them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ "${CI:-}" = "true" ]; then
  # CI stops what it started; a developer keeps the sandbox running between runs.
  trap '.venv/bin/chatops sandbox down >/dev/null 2>&1 || true' EXIT
fi
.venv/bin/python -m pytest "$@"
