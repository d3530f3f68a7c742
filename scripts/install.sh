#!/usr/bin/env bash
# Install everything the bot, its sandbox and its tests need on a fresh Debian machine (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: Prometheus (+promtool) and Alertmanager (+amtool; the sandbox's alerting path),
# Podman serving the Docker Engine API, busybox for images;
# jq and time for the trace lookup benchmark's baseline (grep -F | jq) and its peak memory.
# PostgreSQL (with pg_dump/pg_restore) and Redis are started by the machine itself.
need=()
for package in prometheus prometheus-alertmanager podman runc busybox-static catatonit jq time; do
  dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
done
if ((${#need[@]})); then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# pip's output goes to a log, shown only when it fails (an editable install is noisy).
log=$(mktemp)
if ! { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip \
       && .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'; } >"$log" 2>&1; then
  grep -v '^WARNING: Location' "$log" >&2
  rm -f "$log"
  echo "install.sh: pip install failed" >&2
  exit 1
fi
rm -f "$log"
.venv/bin/chatops --help >/dev/null
