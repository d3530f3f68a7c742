#!/usr/bin/env bash
# Install everything, bring up the sandbox (a local stand-in 3dPot platform) and print a real report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/chatops sandbox up
echo
.venv/bin/chatops health || true
echo
.venv/bin/chatops triage || true
