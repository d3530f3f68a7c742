#!/usr/bin/env bash
# README command 1: install everything, bring up the sandbox (a local stand-in 3dPot platform) and
# tell one whole incident on it, each step as the command a user would type, then its real output
# (sandbox/demo.py): healthy, a bad deploy, triage, an incident, the way back through the gate,
# healthy again, the RCA draft. It leaves the sandbox at v2.0.5 without faults.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
bash scripts/install.sh
installed=$(date +%s)
status=0
.venv/bin/python -m sandbox.demo || status=$?
finished=$(date +%s)
echo "demo.sh: $((finished - started)) s in all ($((installed - started)) s of it installing)."
exit "$status"
